#!/usr/bin/env bash
# Builds the couchops image with docker's CLASSIC builder (DOCKER_BUILDKIT=0), for real, on a
# machine with no container registry: the proof that images/ops/Dockerfile needs no BuildKit.
#
#   images/ops/build-classic.sh            # prints the image id; the daemon is stopped after
#
# What it does (as root; Debian's docker.io and debootstrap are installed if missing):
#   1. starts a private dockerd (socket, data and logs under $WORK, default
#      ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/docker-classic), no iptables, no
#      bridge: build steps use the host's network (--network host) to reach PyPI;
#   2. without a registry there is no python:3.11.14-slim-bookworm to pull, so a STAND-IN is
#      made once: a Debian bookworm minbase (debootstrap) with Debian's python3 (3.11.2),
#      python3-venv and python-is-python3, plus this machine's CA bundle (for pip behind a TLS
#      proxy), imported and tagged with the Dockerfile's base name IN THIS PRIVATE DAEMON ONLY.
#      It is not the official image: this checks the Dockerfile and the context, not the base;
#   3. DOCKER_BUILDKIT=0 docker build -f images/ops/Dockerfile (the context cut by .dockerignore);
#   4. runs the image as its user, offline: `couchops --version` and an import of every couchops
#      module (so every runtime dependency is in the image);
#   5. stops the daemon it started (by its pid).
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${WORK:-${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/docker-classic}
BASE=python:3.11.14-slim-bookworm
TAG=${TAG:-couchops:classic}
log() { printf '[build-classic %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[build-classic] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (a private dockerd, debootstrap)"
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian's ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$WORK"
export DOCKER_HOST="unix://$WORK/docker.sock"
export DOCKER_CONFIG="$WORK/client-config" # never the user's registry credentials
dockerd --data-root "$WORK/root" --exec-root "$WORK/exec" -H "$DOCKER_HOST" \
	--pidfile "$WORK/docker.pid" --iptables=false --ip6tables=false --bridge=none \
	>"$WORK/dockerd.log" 2>&1 &
daemon=$!
stop() {
	kill "$daemon" 2>/dev/null
	wait "$daemon" 2>/dev/null || true
	# dockerd leaves its default network namespace mounted under --exec-root
	umount "$WORK/exec/netns/default" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
docker version >/dev/null 2>&1 || die "dockerd did not start (log: $WORK/dockerd.log)"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
	rootfs="$WORK/base-rootfs"
	if [ ! -x "$rootfs/usr/bin/python3" ]; then
		log "stand-in base: debootstrap bookworm minbase + python3 (a few minutes)"
		rm -rf "$rootfs"
		debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
			bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
			die "debootstrap failed (log: $WORK/debootstrap.log)"
		rm -f "$rootfs"/var/cache/apt/archives/*.deb
	fi
	cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
	tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "onboarding-standin/$BASE" >/dev/null
	docker tag "onboarding-standin/$BASE" "$BASE"
	log "stand-in base imported as $BASE (private daemon only)"
fi

log "DOCKER_BUILDKIT=0 docker build -f images/ops/Dockerfile -t $TAG ."
DOCKER_BUILDKIT=0 docker build --network host -f images/ops/Dockerfile -t "$TAG" . >"$WORK/build.log" 2>&1 ||
	{ tail -30 "$WORK/build.log" >&2; die "the classic build failed (log: $WORK/build.log)"; }
grep -E '^Sending build context' "$WORK/build.log" >&2

docker run --rm --network none "$TAG" --version >&2
docker run --rm --network none --entrypoint python "$TAG" -c '
import importlib, os, pkgutil, couchops
names = [m.name for m in pkgutil.walk_packages(couchops.__path__, "couchops.")]
for name in names:
    importlib.import_module(name)
print(f"{len(names)} couchops modules imported as uid {os.getuid()}")' >&2
docker image inspect --format '{{.Id}}' "$TAG"
