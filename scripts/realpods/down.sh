#!/usr/bin/env bash
# Stop a real-pods cluster started by scripts/realpods/up.sh and delete its state: the node
# containers and their volumes, the node network, the host's routes and forwarding rules, the
# host processes it started (by their pid files), the nodes' dockerd (its data root, which caches
# the node image, is kept), the nodes' cgroups and the state dir. As root.
#
#   scripts/realpods/down.sh [name]        # default onboarding-rp
set -euo pipefail

NAME=${1:-onboarding-rp}
case "$NAME" in *[!a-z0-9-]* | "") echo "realpods down: cluster name must be [a-z0-9-]+" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/realpods/common.sh
source "$HERE/common.sh"

phase "node containers, volumes, network"
# the enforcer runs inside the nodes: stopped while they are there
if [ -x "$HERE/netpol.sh" ]; then "$HERE/netpol.sh" stop "$STATE" "$KUBECONFIG_FILE" || true; fi
if pid_alive "$DOCKER_WORK/dockerd.pid" dockerd && docker version >/dev/null 2>&1; then
	mapfile -t containers < <(docker ps -aq --filter "label=onboarding.realpods=$NAME")
	if [ ${#containers[@]} -gt 0 ]; then
		docker rm -f "${containers[@]}" >/dev/null
		log "removed ${#containers[@]} node containers"
	fi
	mapfile -t volumes < <(docker volume ls -q | grep -E '^onb-node-[0-9]+-(containerd|storage)$' || true)
	if [ ${#volumes[@]} -gt 0 ]; then
		docker volume rm "${volumes[@]}" >/dev/null
		log "removed ${#volumes[@]} volumes"
	fi
	if docker network inspect "$NETWORK" >/dev/null 2>&1; then
		docker network rm "$NETWORK" >/dev/null
		log "removed network $NETWORK"
	fi
fi
for i in $(node_indexes); do
	ip route del "$(pod_cidr "$i")" 2>/dev/null || true
done
for rule in "-i $BRIDGE ! -o $BRIDGE -j DROP" "-o $BRIDGE ! -i $BRIDGE -j DROP"; do
	# shellcheck disable=SC2086 # the rule is a word list
	while iptables -C FORWARD $rule 2>/dev/null; do iptables -D FORWARD $rule; done
done
rule="-s $NODE_SUBNET ! -o $BRIDGE -j MASQUERADE" # registry mode's
# shellcheck disable=SC2086 # the rule is a word list
while iptables -t nat -C POSTROUTING $rule 2>/dev/null; do iptables -t nat -D POSTROUTING $rule; done
if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" 2>/dev/null || true; fi
phase_done

phase "stop add-ons and control plane"
if [ -x "$HERE/cert-manager.sh" ]; then "$HERE/cert-manager.sh" stop "$STATE" || true; fi
stop_pidfile "$STATE/pids/local-path-provisioner.pid" local-path-provisioner
stop_pidfile "$STATE/pids/cluster-addons.pid" cluster-addons.py
stop_pidfile "$STATE/pids/kube-scheduler.pid" kube-scheduler
stop_pidfile "$STATE/pids/kube-controller-manager.pid" kube-controller-manager
stop_pidfile "$STATE/pids/kube-apiserver.pid" kube-apiserver
stop_pidfile "$STATE/pids/etcd.pid" etcd
phase_done

phase "dockerd and state"
# the dockerd serves no other cluster (one real-pods network at a time)
stop_dockerd
[ "$(cat "$RP_HOME/.network-owner" 2>/dev/null)" = "$NAME" ] && rm -f "$RP_HOME/.network-owner"
# the nodes' cgroups (kubelet --cgroup-root), once the processes in them are gone
for _ in $(seq 20); do
	left=$(for i in $(node_indexes); do ls -d /sys/fs/cgroup/*/"$(node_name "$i")" 2>/dev/null || true; done)
	[ -n "$left" ] || break
	# shellcheck disable=SC2086 # one path per word
	find $left -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.5
done
[ -z "$left" ] || log "WARNING: cgroups left (processes still in them?): $left"
rm -rf "$STATE"
phase_done
log "cluster $NAME down: ${TIMINGS[*]}"
