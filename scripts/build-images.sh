#!/usr/bin/env bash
# Builds the images this repository owns, without a registry, into the image archive folder
# the real-pods harness loads into every node (scripts/realpods/), each tagged with the exact
# name the stack files use:
#
#   scripts/build-images.sh          # builds what is out of date, prints timings (make images)
#   FORCE=1 scripts/build-images.sh  # rebuilds both
#
#   image                                     from                        archive file
#   registry.hebergeur.example.fr/onboarding/couchops:<v>   images/ops/Dockerfile       couchops-<v>.tar
#   registry.agence.example.fr/onboarding/web:<v>   images/webapp-standin/ (a stand-in) web-standin-<v>.tar
#
# The names and versions are read from Pulumi.prod.yaml (onboarding:ops / onboarding:webapp
# `image`), which must agree with Pulumi.preprod.yaml. The archive folder is
# ${ONBOARDING_IMAGE_ARCHIVE:-$HOME/.cache/onboarding-images}; beside each tar, <tar>.key holds
# the sha256 of the image's build context (the files its context's .dockerignore allow-list
# lets through), its Dockerfile and its tag: an image whose tar and key match is skipped, and
# when both are, no daemon is started (a check only). Otherwise, as root, on the private dockerd
# of scripts/lib/classic-docker.sh (classic builder, stand-in Python base made once): build,
# run once offline as the image's user (no network, read-only root filesystem, no
# capabilities) to check it starts, `docker save` to a temporary file renamed into place.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/classic-docker.sh
source scripts/lib/classic-docker.sh

ARCHIVE=${ONBOARDING_IMAGE_ARCHIVE:-$HOME/.cache/onboarding-images}
WORK=${WORK:-${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/docker-classic}
BASE=python:3.11.14-slim-bookworm
FORCE=${FORCE:-0}

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[build-images] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The `image:` of a top-level onboarding:<section> of a stack file.
stack_image() {
	awk -v s="  onboarding:$2:" '$0 == s { f = 1; next } /^  [^ ]/ { f = 0 }
		f && $1 == "image:" { print $2; exit }' "$1"
}

image_of() {
	local prod preprod
	prod=$(stack_image Pulumi.prod.yaml "$1")
	preprod=$(stack_image Pulumi.preprod.yaml "$1")
	[ -n "$prod" ] || die "no onboarding:$1 image in Pulumi.prod.yaml"
	[ "$prod" = "$preprod" ] || die "onboarding:$1 image: prod $prod, preprod $preprod (one archive per name)"
	printf '%s\n' "$prod"
}

# The files a build context sends: its .dockerignore must be an allow-list ("*" then "!path"
# lines; "**/__pycache__" and "**/*.pyc" excluded): anything else is refused rather than guessed.
context_files() {
	local context=$1 line
	[ "$(grep -v -e '^#' -e '^$' "$context/.dockerignore" | head -1)" = "*" ] ||
		die "$context/.dockerignore is not an allow-list starting with '*'"
	printf '%s\n' "$context/.dockerignore"
	while IFS= read -r line; do
		case "$line" in
		'' | '#'* | '*' | '**/__pycache__' | '**/*.pyc') ;;
		'!'*)
			find "$context/${line#!}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ;;
		*) die "$context/.dockerignore: '$line' is not understood by the cache key" ;;
		esac
	done <"$context/.dockerignore"
}

context_key() { # CONTEXT DOCKERFILE TAG
	local files file
	files=$(context_files "$1")
	{
		while IFS= read -r file; do
			printf '%s %s\n' "$(sha256sum <"$file" | cut -d' ' -f1)" "${file#./}"
		done < <(printf '%s\n%s\n' "$files" "$2" | sort -u)
		printf 'tag %s\n' "$3"
	} | sha256sum | cut -d' ' -f1
}

# The stand-in web app, offline, as its user: /healthz and /metrics answer on the management
# port, the public port answers a write with CouchDB unreachable (there is no network).
check_web() {
	local tag=$1 cid status=0
	cid=$(docker run -d --network none --read-only --tmpfs /tmp --cap-drop ALL \
		--security-opt no-new-privileges \
		-e PORT=8080 -e MANAGEMENT_PORT=9090 -e COUCHDB_URL=https://couchdb.invalid:6984 \
		-e COUCHDB_DATABASE=onboarding -e COUCHDB_USER=app -e COUCHDB_PASSWORD=unused \
		-e USER_PARTITION_SECRET=unused "$tag")
	docker exec "$cid" python -c '
import json, os, time, urllib.error, urllib.request
def get(url, data=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
for _ in range(100):
    try:
        health = get("http://127.0.0.1:9090/healthz"); break
    except OSError:
        time.sleep(0.1)
write = get("http://127.0.0.1:8080/prospects", json.dumps({"email": "check@example.org"}).encode())
metrics = get("http://127.0.0.1:9090/metrics")
assert health[0] == 200, health
assert write[0] == 503, write
assert metrics[0] == 200 and "http_requests_total{method=\"POST\",code=\"503\"} 1" in metrics[1]
print(f"healthz {health[0]}, POST /prospects {write[0]} (no network), metrics {metrics[0]}, uid {os.getuid()}")
' >&2 || status=$?
	docker logs "$cid" 2>&1 | head -3 >&2
	docker rm -f "$cid" >/dev/null
	return "$status"
}

declare -A SKIP
names=(couchops web-standin)
ops_image=$(image_of ops)
web_image=$(image_of webapp)
declare -A TAG=([couchops]=$ops_image [web-standin]=$web_image)
declare -A CONTEXT=([couchops]=. [web-standin]=images/webapp-standin)
declare -A DOCKERFILE=([couchops]=images/ops/Dockerfile [web-standin]=images/webapp-standin/Dockerfile)
declare -A KEY TAR
mkdir -p "$ARCHIVE"
started=$(now)
stale=0
for name in "${names[@]}"; do
	TAR[$name]="$ARCHIVE/$name-${TAG[$name]##*:}.tar"
	KEY[$name]=$(context_key "${CONTEXT[$name]}" "${DOCKERFILE[$name]}" "${TAG[$name]}")
	if [ "$FORCE" != 1 ] && [ -s "${TAR[$name]}" ] &&
		[ "$(cat "${TAR[$name]}.key" 2>/dev/null)" = "${KEY[$name]}" ]; then
		SKIP[$name]=1
		log "$name: up to date (${TAR[$name]}, key ${KEY[$name]:0:12})"
	else
		stale=$((stale + 1))
	fi
done

if [ "$stale" -gt 0 ]; then
	t=$(now)
	classic_docker_start "$WORK"
	classic_docker_base "$WORK" "$BASE"
	log "daemon and base ready in $(since "$t") s"
	trap 'rm -f "$ARCHIVE"/.*.tar.tmp.$$; classic_docker_stop' EXIT
	for name in "${names[@]}"; do
		[ -z "${SKIP[$name]:-}" ] || continue
		tag=${TAG[$name]}
		old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
		t=$(now)
		DOCKER_BUILDKIT=0 docker build --network host -f "${DOCKERFILE[$name]}" -t "$tag" \
			"${CONTEXT[$name]}" >"$WORK/build-$name.log" 2>&1 ||
			{ tail -30 "$WORK/build-$name.log" >&2; die "$name: the classic build failed (log: $WORK/build-$name.log)"; }
		build=$(since "$t")
		t=$(now)
		if [ "$name" = couchops ]; then classic_docker_check_couchops "$tag"; else check_web "$tag"; fi
		check=$(since "$t")
		t=$(now)
		tmp="$ARCHIVE/.$name.tar.tmp.$$"
		docker save -o "$tmp" "$tag"
		mv -f "$tmp" "${TAR[$name]}"
		printf '%s\n' "${KEY[$name]}" >"${TAR[$name]}.key"
		size=$(docker image inspect --format '{{.Size}}' "$tag")
		# The image this tag named before, if another: not a prune, which would also drop the
		# build stage's intermediate images, the classic builder's only cache of the pip step.
		if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]; then
			docker rmi "$old" >/dev/null 2>&1 || true
		fi
		log "$name: $tag built in $build s ($(grep -E '^Sending build context' "$WORK/build-$name.log" | sed 's/.*daemon *//') context), checked in $check s, saved in $(since "$t") s; image $((size / 1000000)) MB, ${TAR[$name]} $(du -m "${TAR[$name]}" | cut -f1) MiB"
	done
fi
log "done in $(since "$started") s: $stale built, $((${#names[@]} - stale)) up to date"
for name in "${names[@]}"; do printf '%s\t%s\n' "${TAG[$name]}" "${TAR[$name]}"; done
