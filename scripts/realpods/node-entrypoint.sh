#!/bin/bash
# PID 1 of a real-pods node container (installed as /usr/local/bin/onb-node-entrypoint by
# scripts/realpods/node-image.sh; the container is started by scripts/realpods/up.sh).
#
# Reads /etc/onb/node.env and the files beside it (written by up.sh, mounted read-only):
# prepares the node's network namespace (no default route: the node reaches its own bridge
# network, the other nodes' pod CIDRs and the Service range, nothing else), the node's own cgroup
# root, then supervises containerd, kubelet and kube-proxy (each restarted if it exits), after
# importing the image archives into containerd. Restart-safe: `docker start` after a kill runs
# the same steps again (/run and /tmp are tmpfs; /var/lib/containerd is a volume, so images
# already imported are kept).
set -euo pipefail

# shellcheck source=/dev/null
source /etc/onb/node.env # NODE_NAME NODE_IP POD_CIDR CGROUP_ROOT GATEWAY SERVICE_CIDR PEERS
LOG=/var/log/onb
mkdir -p "$LOG"
log() { printf '[%s %s] %s\n' "$NODE_NAME" "$(date +%H:%M:%S)" "$*" | tee -a "$LOG/entrypoint.log" >&2; }

log "starting (pod CIDR $POD_CIDR, cgroup root $CGROUP_ROOT)"

# mounts: kubelet wants shared mount propagation for its volumes; kmsg for its OOM watcher
mount --make-rshared /
[ -e /dev/kmsg ] || ln -s /dev/console /dev/kmsg
# a stable machine id per node (the kubelet reports it; it persists in the container's rootfs)
[ -s /etc/machine-id ] || printf '%s' "$NODE_NAME" | md5sum | cut -c1-32 >/etc/machine-id

# network: forwarding and bridged traffic through iptables (Services between pods of one node)
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 || log "no net.bridge.bridge-nf-call-iptables here"
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || true
if [ "${EGRESS:-0}" = 1 ]; then # registry mode: out through the host (masqueraded there)
	ip route replace default via "$GATEWAY"
else
	ip route del default 2>/dev/null || true
fi
ip route replace "$SERVICE_CIDR" via "$GATEWAY"
for peer in $PEERS; do # cidr=ip
	ip route replace "${peer%%=*}" via "${peer#*=}"
done

# this node's cgroup root in every v1 hierarchy (kubelet --cgroup-root wants it to exist); cpuset
# children need their parent's cpus and mems
for controller in /sys/fs/cgroup/*/; do
	[ -d "$controller" ] || continue
	case "$controller" in */unified/) continue ;; esac
	mkdir -p "$controller$CGROUP_ROOT"
done
if [ -d /sys/fs/cgroup/cpuset ]; then
	cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.cpus"
	cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$CGROUP_ROOT/cpuset.mems"
fi

mkdir -p /etc/cni/net.d /var/lib/kubelet /var/log/pods /var/log/containers /opt/local-path-provisioner
cp /etc/onb/10-onb-pods.conflist /etc/cni/net.d/
printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\n' >/etc/crictl.yaml

PIDS=()
supervise() { # name command...: run, restart after 2 s if it exits
	local name=$1
	shift
	(
		trap 'kill $child 2>/dev/null; exit 0' TERM
		while true; do
			"$@" >>"$LOG/$name.log" 2>&1 &
			child=$!
			wait "$child" || true
			printf '[%s] %s exited, restarting in 2 s\n' "$(date +%H:%M:%S)" "$name" >>"$LOG/$name.log"
			sleep 2
		done
	) &
	PIDS+=($!)
}
stop_all() {
	log "stopping"
	kill "${PIDS[@]}" 2>/dev/null || true
	wait || true
	exit 0
}
trap stop_all TERM INT

supervise containerd containerd --config /etc/onb/containerd.toml
for _ in $(seq 60); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
ctr version >/dev/null 2>&1 || { log "containerd did not start ($LOG/containerd.log)"; exit 1; }
log "containerd up: $(ctr version 2>/dev/null | sed -n 's/^ *Version: *//p' | tail -1)"

onb-import-images 2>&1 | tee -a "$LOG/entrypoint.log" >&2 || log "image import failed (see above)"

supervise kubelet kubelet --config=/etc/onb/kubelet.yaml --kubeconfig=/etc/onb/kubelet.kubeconfig \
	--hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels="$NODE_LABELS" --v=1
supervise kube-proxy kube-proxy --config=/etc/onb/kube-proxy.yaml --v=1
log "kubelet and kube-proxy started"
wait
