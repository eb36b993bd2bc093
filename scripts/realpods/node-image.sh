#!/usr/bin/env bash
# Build the real-pods cluster's node image and its infrastructure images, without a registry.
# Called by scripts/realpods/up.sh with DOCKER_HOST set to the harness's private dockerd:
#
#   DOCKER_HOST=unix://... scripts/realpods/node-image.sh      # last stdout line = the node image tag
#
# What it makes (cached under ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/realpods-node/):
#   rootfs-<hash>/   a Debian bookworm minbase (debootstrap) with what a node needs: iptables,
#                    iproute2, ipset, conntrack, ethtool, socat, mount/util-linux, ca-certificates,
#                    Debian's containerd and runc (a fallback), busybox-static; <hash> is that of the
#                    package list, so a second run reuses it
#   onboarding.local/realpods/node:<hash>   that rootfs + the node binaries of
#                    scripts/bootstrap-nodes.sh (kubelet, kube-proxy, containerd 2.x, runc, crictl in
#                    /usr/local/bin, CNI plugins in /opt/cni/bin) + node-entrypoint.sh, `docker
#                    import`ed; <hash> covers the rootfs, the binaries' stamps and these scripts
#   images/*.tar     `docker save` tars the harness imports into every node's containerd:
#                    onboarding.local/realpods/pause:<v>   the pause binary, alone
#                    onboarding.local/realpods/coredns:<v> the static coredns binary, alone
#                    onboarding.local/realpods/busybox:<v> Debian's busybox-static (the volume
#                                                          provisioner's helper, test pods)
# Each is rebuilt only when its inputs change (a stamp beside it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
NODE_BIN="$CACHE_ROOT/nodes-1.34.2/bin"
OUT="$CACHE_ROOT/realpods-node"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=iptables,iproute2,ipset,conntrack,ethtool,socat,mount,util-linux,ca-certificates,containerd,runc,busybox-static,procps,kmod,nftables
# the versions the images carry: read from the script that builds the binaries
PAUSE_VERSION=$(sed -n 's/^PAUSE_VERSION=//p' "$HERE/../bootstrap-nodes.sh")
COREDNS_VERSION=$(sed -n 's/^COREDNS_VERSION=//p' "$HERE/../bootstrap-nodes.sh")

log() { printf '[node-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	printf '[node-image] ERROR: %s\n' "$*" >&2
	exit 1
}

[ -n "${DOCKER_HOST:-}" ] || die "DOCKER_HOST is not set (scripts/realpods/up.sh starts the harness's dockerd)"
for b in kubelet kube-proxy cni/bridge cni/host-local cni/loopback cni/portmap; do
	[ -x "$NODE_BIN/$b" ] || die "$NODE_BIN/$b is missing: scripts/bootstrap-nodes.sh (make nodes)"
done
mkdir -p "$OUT/images"
exec 8>"$OUT/.lock"
flock -w 1800 8 || die "$OUT/.lock held for 30 min"

# ---------------------------------------------------------------------------------------------
# the Debian rootfs
pkg_hash=$(printf '%s %s' "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-12)
ROOTFS="$OUT/rootfs-$pkg_hash"
if [ ! -f "$ROOTFS/.complete" ]; then
	start=$SECONDS
	log "debootstrap bookworm minbase + ${PACKAGES//,/ } (a few minutes)"
	rm -rf "$ROOTFS"
	debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" \
		>"$OUT/debootstrap.log" 2>&1 || die "debootstrap failed (log: $OUT/debootstrap.log)"
	rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
	touch "$ROOTFS/.complete"
	log "rootfs ready in $((SECONDS - start))s"
fi

# ---------------------------------------------------------------------------------------------
# infrastructure images: a single static binary each (busybox with its applet links)
single_binary_image() { # tag tarname binary entrypoint-json [links...]
	local tag=$1 tar="$OUT/images/$2.tar" bin=$3 entry=$4 stamp dir
	shift 4
	stamp="$tag $(sha256sum "$bin" | cut -c1-16) $*"
	if [ -f "$tar" ] && [ "$(cat "$tar.stamp" 2>/dev/null)" = "$stamp" ]; then return; fi
	dir=$(mktemp -d)
	mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp"
	cp "$bin" "$dir/bin/"
	local link
	for link in "$@"; do ln -s "$(basename "$bin")" "$dir/bin/$link"; done
	printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
	tar -C "$dir" -c . | docker import --change "ENTRYPOINT $entry" --change 'ENV PATH=/bin' - "$tag" >/dev/null
	rm -rf "$dir"
	docker save -o "$tar.tmp" "$tag"
	mv -f "$tar.tmp" "$tar"
	printf '%s\n' "$stamp" >"$tar.stamp"
	log "image $tag -> $tar"
}

[ -x "$NODE_BIN/pause" ] || die "$NODE_BIN/pause is missing: scripts/bootstrap-nodes.sh pause"
[ -x "$NODE_BIN/coredns" ] || die "$NODE_BIN/coredns is missing: scripts/bootstrap-nodes.sh coredns"
single_binary_image "onboarding.local/realpods/pause:$PAUSE_VERSION" pause "$NODE_BIN/pause" '["/bin/pause"]'
single_binary_image "onboarding.local/realpods/coredns:$COREDNS_VERSION" coredns "$NODE_BIN/coredns" '["/bin/coredns"]'
# shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
busybox_version=$(chroot "$ROOTFS" dpkg-query -W -f '${Version}' busybox-static | sed 's/^[0-9]*://' | tr '~+' '--')
applets=$(chroot "$ROOTFS" /bin/busybox --list | grep -vx busybox | tr '\n' ' ')
# shellcheck disable=SC2086 # one link per applet
single_binary_image "onboarding.local/realpods/busybox:$busybox_version" busybox "$ROOTFS/bin/busybox" '["/bin/sh"]' $applets

# ---------------------------------------------------------------------------------------------
# the node image
node_hash=$({
	printf '%s\n' "$pkg_hash"
	cat "$NODE_BIN"/.stamps/* 2>/dev/null
	cat "$HERE/node-image.sh" "$HERE/node-entrypoint.sh" "$HERE/node-import-images.sh"
} | sha256sum | cut -c1-12)
NODE_TAG="onboarding.local/realpods/node:$node_hash"
if ! docker image inspect "$NODE_TAG" >/dev/null 2>&1; then
	start=$SECONDS
	layer=$(mktemp -d)
	mkdir -p "$layer/usr/local/bin" "$layer/opt/cni/bin"
	for b in kubelet kube-proxy crictl containerd containerd-shim-runc-v2 ctr runc; do
		# containerd/runc from bootstrap-nodes.sh when built; otherwise Debian's (in /usr/bin)
		if [ -x "$NODE_BIN/$b" ]; then cp "$NODE_BIN/$b" "$layer/usr/local/bin/"; fi
	done
	cp "$NODE_BIN"/cni/* "$layer/opt/cni/bin/"
	install -m 0755 "$HERE/node-entrypoint.sh" "$layer/usr/local/bin/onb-node-entrypoint"
	install -m 0755 "$HERE/node-import-images.sh" "$layer/usr/local/bin/onb-import-images"
	log "importing $NODE_TAG (rootfs + $(find "$layer" -type f | wc -l) files)"
	# docker import takes one tree: the rootfs with the layer copied over it
	tmpdir=$(mktemp -d -p "$OUT")
	cp -a "$ROOTFS"/. "$tmpdir/"
	cp -a "$layer"/. "$tmpdir/"
	rm -f "$tmpdir/.complete"
	tar -C "$tmpdir" -c . | docker import \
		--change 'ENTRYPOINT ["/usr/local/bin/onb-node-entrypoint"]' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		- "$NODE_TAG" >/dev/null
	rm -rf "$tmpdir" "$layer"
	log "node image $NODE_TAG in $((SECONDS - start))s"
	# older node images (other inputs): removed unless a container still uses one
	docker images --format '{{.Repository}}:{{.Tag}}' onboarding.local/realpods/node | grep -vxF "$NODE_TAG" |
		while read -r old; do docker rmi "$old" >/dev/null 2>&1 && log "removed $old"; done || true
fi
echo "$NODE_TAG"
