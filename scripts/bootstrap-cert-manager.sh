#!/usr/bin/env bash
# Build cert-manager's controller from Go modules, for the real-pods harness (scripts/realpods/
# cert-manager.sh runs it out of cluster against the harness's API server).
#
#   BIN=$(scripts/bootstrap-cert-manager.sh | tail -1)   # last stdout line = the bin dir
#
# Result: ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/cert-manager-<version>/
#   crds/*.yaml      all six CRDs of the module zip's deploy/crds/: the four cert-manager.io ones
#                    scripts/bootstrap-kube.sh also copies, and acme.cert-manager.io's Orders and
#                    Challenges, without which the controller's informers never sync
#   bin/controller   built the wrapper module scripts/realpods/cert-manager (go.mod, go.sum, main.go):
# cert-manager's own main package is a nested module of its repository (cmd/controller) that the
# module proxy does not serve, so main.go is a launcher of ours over the public packages of the
# published github.com/cert-manager/cert-manager root module at v$CERT_MANAGER_VERSION (the
# version whose CRDs scripts/bootstrap-kube.sh installs). scripts/realpods/ADDONS.md says what
# it runs and what not.
#
# Static (CGO_ENABLED=0), -trimpath, stripped, with cert-manager's version variables (its
# --version says v$CERT_MANAGER_VERSION; checked). Idempotent: a stamp (version + hash of the
# recipe + go version); a second run only checks it. Written to a temp name and renamed.
# Honours GOFLAGS/GOPROXY; parallelism -p=2 (CERT_MANAGER_GO_P to change it).
set -euo pipefail

CERT_MANAGER_VERSION=1.21.2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPE="$HERE/realpods/cert-manager"
CACHE_ROOT=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
PREFIX="$CACHE_ROOT/cert-manager-$CERT_MANAGER_VERSION"
BIN="$PREFIX/bin"
STAMP="$BIN/.stamp-controller"

log() { printf '[bootstrap-cert-manager %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap-cert-manager] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (cert-manager v$CERT_MANAGER_VERSION asks for Go >= 1.26)"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -p=${CERT_MANAGER_GO_P:-2} -buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

ldflags() {
	local pkg=github.com/cert-manager/cert-manager/pkg/util
	printf '%s' "-s -w -X $pkg.AppVersion=v$CERT_MANAGER_VERSION -X $pkg.AppGitState=archive"
}

mkdir -p "$BIN"
exec 9>"$PREFIX/.lock"
if command -v flock >/dev/null 2>&1; then
	flock -w 3600 9 || die "another bootstrap has held $PREFIX/.lock for an hour"
fi

# the CRDs, as the module zip has them
module="github.com/cert-manager/cert-manager@v$CERT_MANAGER_VERSION"
if [ -f "$PREFIX/crds/.complete" ] && [ "$(cat "$PREFIX/crds/.complete")" = "$module deploy/crds" ]; then
	log "crds: up to date"
else
	dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir/deploy/crds" ] || die "go mod download $module gave no deploy/crds/ (is GOPROXY reachable?)"
	rm -rf "$PREFIX/crds.tmp" && mkdir -p "$PREFIX/crds.tmp"
	cp "$dir"/deploy/crds/*.yaml "$PREFIX/crds.tmp/"
	[ "$(find "$PREFIX/crds.tmp" -name '*.yaml' | wc -l)" -eq 6 ] || die "expected 6 CRDs in $module deploy/crds/"
	chmod -R u+w "$PREFIX/crds.tmp" && printf '%s\n' "$module deploy/crds" >"$PREFIX/crds.tmp/.complete"
	rm -rf "$PREFIX/crds" && mv "$PREFIX/crds.tmp" "$PREFIX/crds"
	log "crds: $(find "$PREFIX/crds" -name '*.yaml' -printf '%f ')"
fi

stamp="controller v$CERT_MANAGER_VERSION recipe $({ go version; cat "$RECIPE/go.mod" "$RECIPE/go.sum" "$RECIPE/main.go"; ldflags; } | sha256sum | cut -d' ' -f1)"
if [ -x "$BIN/controller" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp" ]; then
	log "controller: up to date ($stamp)"
else
	start=$SECONDS
	log "controller: building v$CERT_MANAGER_VERSION (cold: several minutes on 2 cores)"
	src="$PREFIX/work"
	rm -rf "$src" && mkdir -p "$src" && cp "$RECIPE/go.mod" "$RECIPE/go.sum" "$RECIPE/main.go" "$src/"
	(cd "$src" && go build -mod=readonly -trimpath -ldflags "$(ldflags)" -o "$BIN/.controller.tmp" .) ||
		die "building the controller failed (log above)"
	"$BIN/.controller.tmp" --version 2>/dev/null | grep -q "v$CERT_MANAGER_VERSION " ||
		die "controller --version does not report v$CERT_MANAGER_VERSION: $("$BIN/.controller.tmp" --version 2>&1 | head -1)"
	if command -v file >/dev/null 2>&1; then
		file "$BIN/.controller.tmp" | grep -q 'statically linked' || die "controller is not static: $(file "$BIN/.controller.tmp")"
	fi
	chmod 0755 "$BIN/.controller.tmp" && mv -f "$BIN/.controller.tmp" "$BIN/controller"
	printf '%s\n' "$stamp" >"$STAMP.tmp" && mv -f "$STAMP.tmp" "$STAMP"
	log "controller: built in $((SECONDS - start))s"
fi
log "controller: $("$BIN/controller" --version)"
echo "$BIN"
