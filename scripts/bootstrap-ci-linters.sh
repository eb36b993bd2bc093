#!/usr/bin/env bash
# The forges' own checkers for the pipelines (.gitlab-ci.yml, .github/workflows/), built or
# fetched once and cached outside the repository, for tests/integration/test_pipelines.py:
#   - actionlint (GitHub Actions' workflow linter), built from its Go module;
#   - shellcheck (Debian's package), which actionlint runs on every `run:` script;
#   - GitLab's CI JSON schema (the one GitLab's pipeline editor validates with), taken from the
#     npm package gitlab-ci-local that bundles it (the tarball's sha512 is pinned below) by
#     scripts/ci/extract_gitlab_schema.py, which reads the literal and runs nothing.
#
#   DIR=$(scripts/bootstrap-ci-linters.sh | tail -1)   # $DIR/bin/actionlint, $DIR/gitlab-ci.schema.json
#
# Result: ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/ci-linters-<actionlint>-<gitlab-ci-local>/.
# Idempotent: a second run only checks what is there. Needs go (the Go module proxy), npm and,
# for shellcheck, apt-get as root.
set -euo pipefail
cd "$(dirname "$0")/.."

ACTIONLINT_VERSION=v1.7.12
GITLAB_CI_LOCAL_VERSION=4.75.1
GITLAB_CI_LOCAL_INTEGRITY=sha512-ArmGX576uKqTgs4PMCH3FNPED+JhxDLb2Ocb893+aY88RA2sx9gP6L7GvpuHQJkFJRvA5KSq9fD0yyRLaLEydw==

PREFIX="${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/ci-linters-$ACTIONLINT_VERSION-$GITLAB_CI_LOCAL_VERSION"
log() { printf '[bootstrap-ci-linters %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap-ci-linters] ERROR: %s\n' "$*" >&2; exit 1; }
mkdir -p "$PREFIX/bin"

if [ -x "$PREFIX/bin/actionlint" ] && "$PREFIX/bin/actionlint" -version 2>/dev/null | grep -qx "$ACTIONLINT_VERSION"; then
	log "actionlint $ACTIONLINT_VERSION: up to date"
else
	command -v go >/dev/null 2>&1 || die "go is not on PATH (needed to build actionlint)"
	log "actionlint $ACTIONLINT_VERSION: building from its Go module"
	start=$SECONDS
	GOBIN="$PREFIX/bin.tmp" CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} \
		GOFLAGS="${GOFLAGS:-} -p=2 -buildvcs=false" \
		go install -trimpath -ldflags "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
		"github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" ||
		die "go install actionlint failed (is the Go module proxy reachable?)"
	mv -f "$PREFIX/bin.tmp/actionlint" "$PREFIX/bin/actionlint" && rmdir "$PREFIX/bin.tmp"
	log "actionlint built in $((SECONDS - start))s"
fi

if ! command -v shellcheck >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || die "shellcheck is missing and installing it needs root (apt-get install shellcheck)"
	log "installing Debian's shellcheck"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi

schema="$PREFIX/gitlab-ci.schema.json"
if [ -s "$schema" ]; then
	log "GitLab CI schema (gitlab-ci-local $GITLAB_CI_LOCAL_VERSION): up to date"
else
	command -v npm >/dev/null 2>&1 || die "npm is not on PATH (needed to fetch gitlab-ci-local)"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	(cd "$work" && npm pack "gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION" --silent >/dev/null) ||
		die "npm pack gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION failed"
	tarball="$work/gitlab-ci-local-$GITLAB_CI_LOCAL_VERSION.tgz"
	got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
	[ "$got" = "$GITLAB_CI_LOCAL_INTEGRITY" ] ||
		die "gitlab-ci-local tarball integrity $got is not the pinned $GITLAB_CI_LOCAL_INTEGRITY"
	tar -xzf "$tarball" -C "$work" package/dist/index.js
	python3 scripts/ci/extract_gitlab_schema.py "$work/package/dist/index.js" >"$schema.tmp" ||
		die "no GitLab CI schema found in gitlab-ci-local $GITLAB_CI_LOCAL_VERSION"
	mv -f "$schema.tmp" "$schema"
	log "GitLab CI schema extracted ($(wc -c <"$schema") bytes)"
fi
echo "$PREFIX"
