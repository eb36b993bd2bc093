# shellcheck shell=bash
# Sourced, not run: a private dockerd for docker's CLASSIC builder (DOCKER_BUILDKIT=0) on a
# machine with no container registry, and a stand-in for the images' Python base. Used by
# images/ops/build-classic.sh and scripts/build-images.sh (both `set -euo pipefail`, as root):
#
#   source scripts/lib/classic-docker.sh
#   classic_docker_start "$WORK"        # waits for any other user of $WORK (a lock on fd 9),
#                                       # starts dockerd, exports DOCKER_HOST; stopped (by its
#                                       # pid) on EXIT (a caller's own EXIT trap calls
#                                       # classic_docker_stop)
#   classic_docker_base "$WORK" python:3.11.14-slim-bookworm
#   classic_docker_check_couchops <tag> # the couchops image, offline, as its user
#
# The daemon: socket, data, exec root and log under $WORK (default
# ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/docker-classic), no iptables, no
# bridge: build steps use the host's network (--network host) to reach PyPI, containers run
# with --network none. The data root is kept between runs (layers, the stand-in base), so a
# lock on $WORK makes a second run wait instead of starting a second daemon on the same root.
#
# The base: without a registry there is no python:3.11.14-slim-bookworm to pull, so a
# STAND-IN is made once: a Debian bookworm minbase (debootstrap) with Debian's python3 (3.11.2),
# python3-venv and python-is-python3, plus this machine's CA bundle (for pip behind a TLS
# proxy), imported and tagged with the Dockerfile's base name IN THE PRIVATE DAEMON ONLY. It is
# not the official image: this checks the Dockerfiles and their contexts, not the base.

classic_docker_log() { printf '[classic-docker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
classic_docker_die() {
	printf '[classic-docker] ERROR: %s\n' "$*" >&2
	exit 1
}

# Root, Debian's docker.io and debootstrap (installed with apt when missing).
classic_docker_prereqs() {
	[ "$(id -u)" = 0 ] || classic_docker_die "needs root (a private dockerd, debootstrap)"
	local missing=()
	command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
	command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
	if [ ${#missing[@]} -gt 0 ]; then
		classic_docker_log "installing Debian's ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${missing[@]}" >/dev/null
	fi
}

CLASSIC_DOCKERD_PID=
CLASSIC_DOCKER_WORK=

classic_docker_stop() {
	[ -n "$CLASSIC_DOCKERD_PID" ] || return 0
	kill "$CLASSIC_DOCKERD_PID" 2>/dev/null
	wait "$CLASSIC_DOCKERD_PID" 2>/dev/null || true
	CLASSIC_DOCKERD_PID=
	# dockerd leaves its default network namespace mounted under --exec-root
	umount "$CLASSIC_DOCKER_WORK/exec/netns/default" 2>/dev/null || true
}

classic_docker_start() {
	local work=$1
	classic_docker_prereqs
	mkdir -p "$work"
	CLASSIC_DOCKER_WORK=$work
	# fd 9 holds the lock until the caller exits; the daemon does not inherit it.
	exec 9>"$work/lock"
	if ! flock -n 9; then
		classic_docker_log "another build uses $work: waiting for it (up to 30 min)"
		flock -w 1800 9 || classic_docker_die "$work stayed locked for 30 min"
	fi
	export DOCKER_HOST="unix://$work/docker.sock"
	export DOCKER_CONFIG="$work/client-config" # never the user's registry credentials
	dockerd --data-root "$work/root" --exec-root "$work/exec" -H "$DOCKER_HOST" \
		--pidfile "$work/docker.pid" --iptables=false --ip6tables=false --bridge=none \
		>"$work/dockerd.log" 2>&1 9>&- &
	CLASSIC_DOCKERD_PID=$!
	trap classic_docker_stop EXIT
	local _
	for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
	docker version >/dev/null 2>&1 || classic_docker_die "dockerd did not start (log: $work/dockerd.log)"
}

classic_docker_base() {
	local work=$1 base=$2 rootfs
	docker image inspect "$base" >/dev/null 2>&1 && return 0
	rootfs="$work/base-rootfs"
	if [ ! -x "$rootfs/usr/bin/python3" ]; then
		classic_docker_log "stand-in base: debootstrap bookworm minbase + python3 (a few minutes)"
		rm -rf "$rootfs"
		debootstrap --variant=minbase \
			--include=python3,python3-venv,python-is-python3,ca-certificates \
			bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
			classic_docker_die "debootstrap failed (log: $work/debootstrap.log)"
		rm -f "$rootfs"/var/cache/apt/archives/*.deb
	fi
	cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
	tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "onboarding-standin/$base" >/dev/null
	docker tag "onboarding-standin/$base" "$base"
	classic_docker_log "stand-in base imported as $base (private daemon only)"
}

# The couchops image, offline, as its user, with a read-only root filesystem and no
# capabilities (as its Jobs run it): its version, then an import of every couchops module
# (so every runtime dependency is in the image).
classic_docker_check_couchops() {
	local tag=$1
	local run=(docker run --rm --network none --read-only --cap-drop ALL
		--security-opt no-new-privileges)
	"${run[@]}" "$tag" --version >&2
	"${run[@]}" --entrypoint python "$tag" -c '
import importlib, os, pkgutil, couchops
names = [m.name for m in pkgutil.walk_packages(couchops.__path__, "couchops.")]
for name in names:
    importlib.import_module(name)
print(f"{len(names)} couchops modules imported as uid {os.getuid()}")' >&2
}
