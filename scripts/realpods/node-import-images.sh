#!/bin/bash
# Import image archives into this node's containerd (namespace k8s.io, the kubelet's), installed
# as /usr/local/bin/onb-import-images in the real-pods node image. Run by the node's entrypoint at
# start and by scripts/realpods/up.sh (docker exec) on every `up`, so archives added since are
# loaded too.
#
# Sources, each a directory of `docker save` tars mounted read-only: /images/infra (the harness's
# pause, coredns and busybox images) and /images/archive (${ONBOARDING_IMAGE_ARCHIVE}: the stack's
# images). A tar already imported (same name, size and mtime) is skipped: its marker is kept
# under /var/lib/containerd (a volume), so a restarted node does not import it again.
set -euo pipefail

MARKS=/var/lib/containerd/.onb-imported
mkdir -p "$MARKS"
imported=0 skipped=0 failed=0
for tar in /images/infra/*.tar /images/archive/*.tar; do
	[ -f "$tar" ] || continue
	mark="$MARKS/$(basename "$(dirname "$tar")")-$(basename "$tar")"
	id=$(stat -c '%s %Y' "$tar")
	if [ "$(cat "$mark" 2>/dev/null)" = "$id" ]; then
		skipped=$((skipped + 1))
		continue
	fi
	start=$SECONDS
	if ctr -n k8s.io images import "$tar" >/tmp/import.log 2>&1; then
		printf '%s\n' "$id" >"$mark"
		imported=$((imported + 1))
		printf 'imported %s in %ss: %s\n' "$tar" "$((SECONDS - start))" "$(grep -o 'unpacking [^ ]*' /tmp/import.log | tr '\n' ' ')"
	else
		failed=$((failed + 1))
		printf 'FAILED to import %s: %s\n' "$tar" "$(tail -3 /tmp/import.log)"
	fi
done
printf 'images: %d imported, %d already there, %d failed\n' "$imported" "$skipped" "$failed"
[ "$failed" = 0 ]
