#!/usr/bin/env bash
# Build SeaweedFS's `weed` binary from its Go module, for the tests of the off-site backups
# against a real S3 server (tests/ops/s3_server.py starts it; tests/ops/test_offsite_s3.py uses it).
#
#   BIN=$(scripts/bootstrap-seaweedfs.sh | tail -1)     # last stdout line = the bin dir
#
# Result: ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/seaweedfs-<version>/bin/weed,
# from github.com/seaweedfs/seaweedfs @ $SEAWEEDFS_VERSION (the only version of that module the
# Go module proxy here serves; upstream's 4.53 plus commits, `weed version` says 4.53 and the
# commit). `go install github.com/seaweedfs/seaweedfs/weed@<version>` refuses it: its go.mod
# has a replace directive (github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39), which
# Go honours only in the main module. So the module is downloaded and ./weed built inside it, as
# the main module, with its own go.sum (-mod=readonly: nothing else is resolved), as upstream's
# `cd weed; go install` does.
#
# Static (CGO_ENABLED=0), -trimpath, stripped. Idempotent: the binary has a stamp (version +
# hash of its recipe + go version); a second run only checks it. The binary is written to a
# temp name and renamed, so a killed build never leaves a half binary. Honours
# GOFLAGS/GOPROXY from the environment; parallelism defaults to -p=2 (SEAWEEDFS_GO_P to change
# it). The time taken goes to stderr.
set -euo pipefail

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
SEAWEEDFS_COMMIT=${SEAWEEDFS_VERSION##*-}

CACHE_ROOT=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
PREFIX="$CACHE_ROOT/seaweedfs-$SEAWEEDFS_VERSION"
BIN="$PREFIX/bin"
STAMPS="$BIN/.stamps"

log() { printf '[bootstrap-seaweedfs %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap-seaweedfs] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed to build SeaweedFS)"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -p=${SEAWEEDFS_GO_P:-2} -buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# the commit, as upstream's release builds stamp it (`weed version` shows it)
LDFLAGS="-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$SEAWEEDFS_COMMIT"

recipe_hash() { # the build recipe and the Go version -> sha256
	{ go version; printf '%s\n' "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION ./weed" "$LDFLAGS" "$CGO_ENABLED"; } |
		sha256sum | cut -d' ' -f1
}

module_dir() { # module@version -> its directory in the module cache
	go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

is_fresh() { # name stamp-content
	[ -x "$BIN/$1" ] && [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]
}

mark_fresh() { # name stamp-content
	printf '%s\n' "$2" >"$STAMPS/$1.tmp" && mv -f "$STAMPS/$1.tmp" "$STAMPS/$1"
}

install_bin() { # tmpfile name
	chmod 0755 "$1"
	mv -f "$1" "$BIN/$2"
}

build_weed() {
	local stamp src
	stamp="weed $SEAWEEDFS_VERSION recipe $(recipe_hash)"
	if is_fresh weed "$stamp"; then log "weed: up to date"; return; fi
	log "weed: building $SEAWEEDFS_MODULE $SEAWEEDFS_VERSION (cold: several minutes on 2 cores)"
	src=$(module_dir "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION")
	[ -n "$src" ] && [ -f "$src/go.mod" ] ||
		die "go mod download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION failed (is GOPROXY reachable? the proxy may refuse this version)"
	# built in place: the module cache is read-only and the build writes only to $BIN
	(cd "$src" && go build -mod=readonly -trimpath -ldflags "$LDFLAGS" -o "$BIN/.weed.tmp" ./weed) ||
		die "building weed failed (log above)"
	"$BIN/.weed.tmp" version 2>/dev/null | grep -q "$SEAWEEDFS_COMMIT" ||
		die "weed version does not report $SEAWEEDFS_COMMIT: $("$BIN/.weed.tmp" version 2>&1 | head -1)"
	install_bin "$BIN/.weed.tmp" weed
	mark_fresh weed "$stamp"
}

mkdir -p "$BIN" "$STAMPS"

# one lock: two bootstraps never build weed at once
exec 9>"$PREFIX/.lock-weed"
if command -v flock >/dev/null 2>&1; then
	flock -w 7200 9 || die "another bootstrap has held $PREFIX/.lock-weed for 2 hours"
fi
start=$SECONDS
build_weed
log "weed: done in $((SECONDS - start))s"
exec 9>&-
log "  weed: $(head -c 200 "$STAMPS/weed")"
echo "$BIN"
