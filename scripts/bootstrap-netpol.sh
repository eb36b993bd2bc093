#!/usr/bin/env bash
# Build the NetworkPolicy enforcer of the real-pods cluster from Go modules: kube-router, run by
# scripts/realpods/netpol.sh in firewall-only mode inside each node container.
#
#   BIN=$(scripts/bootstrap-netpol.sh | tail -1)     # last stdout line = the bin dir
#
# Result: ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/netpol-kube-router-<version>/bin/kube-router,
# github.com/cloudnativelabs/kube-router/v2 v$KUBE_ROUTER_VERSION built through the wrapper module
# scripts/realpods/netpol (go.mod, go.sum, tools.go; why this enforcer and these dependency
# versions: scripts/realpods/ADDONS.md).
#
# Static (CGO_ENABLED=0), -trimpath, stripped, with kube-router's version variables (its
# --version names v$KUBE_ROUTER_VERSION; checked). Idempotent: a stamp (version + hash of the
# recipe + go version); a second run only checks it. Written to a temp name and renamed.
# Honours GOFLAGS/GOPROXY; parallelism -p=2 (NETPOL_GO_P to change it).
set -euo pipefail

KUBE_ROUTER_VERSION=2.1.0
# the module's timestamp on the proxy (what upstream's build puts in BuildDate is the build day)
KUBE_ROUTER_DATE=2024-03-02T21:45:54Z

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPE="$HERE/realpods/netpol"
CACHE_ROOT=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
PREFIX="$CACHE_ROOT/netpol-kube-router-$KUBE_ROUTER_VERSION"
BIN="$PREFIX/bin"
STAMP="$BIN/.stamp-kube-router"

log() { printf '[bootstrap-netpol %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap-netpol] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (the wrapper module asks for Go >= 1.23)"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -p=${NETPOL_GO_P:-2} -buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

ldflags() {
	local pkg=github.com/cloudnativelabs/kube-router/v2/pkg/version
	printf '%s' "-s -w -X $pkg.Version=v$KUBE_ROUTER_VERSION -X $pkg.BuildDate=$KUBE_ROUTER_DATE"
}

mkdir -p "$BIN"
exec 9>"$PREFIX/.lock"
if command -v flock >/dev/null 2>&1; then
	flock -w 3600 9 || die "another bootstrap has held $PREFIX/.lock for an hour"
fi

stamp="kube-router v$KUBE_ROUTER_VERSION recipe $({ go version; cat "$RECIPE/go.mod" "$RECIPE/go.sum" "$RECIPE/tools.go"; ldflags; } | sha256sum | cut -d' ' -f1)"
if [ -x "$BIN/kube-router" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp" ]; then
	log "kube-router: up to date ($stamp)"
else
	start=$SECONDS
	log "kube-router: building v$KUBE_ROUTER_VERSION (cold: a few minutes on 2 cores)"
	src="$PREFIX/work"
	rm -rf "$src" && mkdir -p "$src" && cp "$RECIPE/go.mod" "$RECIPE/go.sum" "$RECIPE/tools.go" "$src/"
	(cd "$src" && go build -mod=readonly -trimpath -ldflags "$(ldflags)" -o "$BIN/.kube-router.tmp" \
		github.com/cloudnativelabs/kube-router/v2/cmd/kube-router) ||
		die "building kube-router failed (log above)"
	"$BIN/.kube-router.tmp" --version 2>&1 | grep -q "version v$KUBE_ROUTER_VERSION," ||
		die "kube-router --version does not report v$KUBE_ROUTER_VERSION: $("$BIN/.kube-router.tmp" --version 2>&1 | head -1)"
	if command -v file >/dev/null 2>&1; then
		file "$BIN/.kube-router.tmp" | grep -q 'statically linked' || die "kube-router is not static: $(file "$BIN/.kube-router.tmp")"
	fi
	chmod 0755 "$BIN/.kube-router.tmp" && mv -f "$BIN/.kube-router.tmp" "$BIN/kube-router"
	printf '%s\n' "$stamp" >"$STAMP.tmp" && mv -f "$STAMP.tmp" "$STAMP"
	log "kube-router: built in $((SECONDS - start))s"
fi
log "kube-router: $("$BIN/kube-router" --version 2>&1 | head -1)"
echo "$BIN"
