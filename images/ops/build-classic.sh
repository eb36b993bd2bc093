#!/usr/bin/env bash
# Builds the couchops image with docker's CLASSIC builder (DOCKER_BUILDKIT=0), for real, on a
# machine with no container registry: the proof that images/ops/Dockerfile needs no BuildKit.
#
#   images/ops/build-classic.sh            # prints the image id; the daemon is stopped after
#
# What it does (as root; Debian's docker.io and debootstrap are installed if missing), with
# scripts/lib/classic-docker.sh (shared with scripts/build-images.sh, which builds the tagged
# images into the image archive):
#   1. starts a private dockerd (socket, data and logs under $WORK, default
#      ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/docker-classic), no iptables, no
#      bridge: build steps use the host's network (--network host) to reach PyPI;
#   2. without a registry there is no python:3.11.14-slim-bookworm to pull, so a STAND-IN is
#      made once (a debootstrap bookworm minbase with Debian's python3 3.11.2), tagged with the
#      Dockerfile's base name IN THIS PRIVATE DAEMON ONLY. It is not the official image: this
#      checks the Dockerfile and the context, not the base;
#   3. DOCKER_BUILDKIT=0 docker build -f images/ops/Dockerfile (the context cut by .dockerignore);
#   4. runs the image as its user, offline, read-only: `couchops --version` and an import of
#      every couchops module (so every runtime dependency is in the image);
#   5. stops the daemon it started (by its pid).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/classic-docker.sh
source scripts/lib/classic-docker.sh

WORK=${WORK:-${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/docker-classic}
BASE=python:3.11.14-slim-bookworm
TAG=${TAG:-couchops:classic}

classic_docker_start "$WORK"
classic_docker_base "$WORK" "$BASE"

classic_docker_log "DOCKER_BUILDKIT=0 docker build -f images/ops/Dockerfile -t $TAG ."
DOCKER_BUILDKIT=0 docker build --network host -f images/ops/Dockerfile -t "$TAG" . >"$WORK/build.log" 2>&1 ||
	{ tail -30 "$WORK/build.log" >&2; classic_docker_die "the classic build failed (log: $WORK/build.log)"; }
grep -E '^Sending build context' "$WORK/build.log" >&2

classic_docker_check_couchops "$TAG"
docker image inspect --format '{{.Id}}' "$TAG"
