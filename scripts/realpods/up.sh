#!/usr/bin/env bash
# Start the real-pods cluster: a Kubernetes 1.34.2 control plane on the host and five node
# containers (onb-node-1..5 of Pulumi.prod.yaml) running containerd, runc, kubelet and kube-proxy,
# with pod networking, cluster DNS, a volume provisioner, cert-manager and the stack's images
# loaded from the local archive. As root.
#
#   KUBECONFIG=$(scripts/realpods/up.sh | tail -1)    # last stdout line = the kubeconfig
#   scripts/realpods/up.sh other-name                 # the name of the state dir (default onboarding-rp)
#   scripts/realpods/down.sh [name]                   # stop it and delete its state
#
# Idempotent: every phase checks before it acts (a running process, container or object is
# reused), so a second run on a healthy cluster only loads archives added since and checks.
# Only one real-pods cluster at a time: the node network 172.31.250.0/24 is fixed.
# What runs where, what is not there: scripts/realpods/README.md.
set -euo pipefail

NAME=${1:-onboarding-rp}
case "$NAME" in *[!a-z0-9-]* | "") echo "realpods up: cluster name must be [a-z0-9-]+" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/realpods/common.sh
source "$HERE/common.sh"

[ "$(id -u)" = 0 ] || die "needs root (a dockerd, node containers, routes to the pod network)"
mkdir -p "$STATE"/{pids,logs,pki,nodes}
if [ -f "$RP_HOME/.network-owner" ] && [ "$(cat "$RP_HOME/.network-owner")" != "$NAME" ]; then
	die "the real-pods network belongs to cluster '$(cat "$RP_HOME/.network-owner")': scripts/realpods/down.sh $(cat "$RP_HOME/.network-owner") first"
fi

# ---------------------------------------------------------------------------------------------
phase "prerequisites and binaries"
missing=()
for c in dockerd:docker.io debootstrap:debootstrap openssl:openssl ip:iproute2 iptables:iptables flock:util-linux; do
	command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian's ${missing[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
KBIN=$("$ROOT/scripts/bootstrap-kube.sh" apiserver controller-manager scheduler etcd crds kubectl 2>"$STATE/logs/bootstrap-kube.log" | tail -1) ||
	die "scripts/bootstrap-kube.sh failed ($STATE/logs/bootstrap-kube.log)"
NBIN=$("$ROOT/scripts/bootstrap-nodes.sh" 2>"$STATE/logs/bootstrap-nodes.log" | tail -1) ||
	die "scripts/bootstrap-nodes.sh failed ($STATE/logs/bootstrap-nodes.log)"
kubectl() { "$KBIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$STATE/kubectl-cache" "$@"; }
phase_done

# ---------------------------------------------------------------------------------------------
phase "dockerd for the nodes"
start_dockerd
phase_done

phase "node image and infrastructure images"
NODE_IMAGE=$("$HERE/node-image.sh" 2>>"$STATE/logs/node-image.log" | tail -1) ||
	die "node-image.sh failed ($STATE/logs/node-image.log): $(tail -3 "$STATE/logs/node-image.log")"
log "node image $NODE_IMAGE"
phase_done

# ---------------------------------------------------------------------------------------------
phase "node network $NODE_SUBNET"
printf '%s\n' "$NAME" >"$RP_HOME/.network-owner"
if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
	docker network create --driver bridge --subnet "$NODE_SUBNET" --gateway "$GATEWAY" \
		-o com.docker.network.bridge.name="$BRIDGE" \
		-o com.docker.network.bridge.enable_ip_masquerade=false \
		--label "onboarding.realpods=$NAME" "$NETWORK" >/dev/null
fi
ip link set "$BRIDGE" up 2>/dev/null || true
# the bridge only exists once docker has a container on it (or at once, depending on the
# version); the API server must bind the gateway address before any node starts, so add it
ip link show "$BRIDGE" >/dev/null 2>&1 || die "docker created no bridge $BRIDGE"
ip addr show dev "$BRIDGE" | grep -q "inet $GATEWAY/" || ip addr add "$GATEWAY/24" dev "$BRIDGE"
if [ "$PULL" = 1 ]; then
	# registry mode: the nodes' traffic out is masqueraded behind the host (for image pulls)
	log "registry mode (ONBOARDING_REALPODS_PULL=1): the nodes reach outside through the host"
	rule="-s $NODE_SUBNET ! -o $BRIDGE -j MASQUERADE"
	# shellcheck disable=SC2086 # the rule is a word list
	iptables -t nat -C POSTROUTING $rule 2>/dev/null || iptables -t nat -A POSTROUTING $rule
else
	# nothing leaves the node network: forwarding between it and any other interface is dropped
	for rule in "-i $BRIDGE ! -o $BRIDGE -j DROP" "-o $BRIDGE ! -i $BRIDGE -j DROP"; do
		# shellcheck disable=SC2086 # the rule is a word list
		iptables -C FORWARD $rule 2>/dev/null || iptables -I FORWARD $rule
	done
fi
for i in $(node_indexes); do
	ip route replace "$(pod_cidr "$i")" via "$(node_ip "$i")" dev "$BRIDGE"
done
phase_done

# ---------------------------------------------------------------------------------------------
phase "PKI"
make_pki
write_kubeconfig "$KUBECONFIG_FILE" admin "$STATE/pki/admin" realpods onboarding-prod onboarding-preprod
phase_done

phase "control plane"
start_control_plane
phase_done

# ---------------------------------------------------------------------------------------------
phase "node containers"
nodes_since=$(date +%s)
start_nodes "$NODE_IMAGE"
phase_done

phase "nodes Ready"
wait_nodes_ready 300 "$nodes_since"
phase_done

# ---------------------------------------------------------------------------------------------
phase "cluster add-ons"
install_addons
phase_done

phase "CoreDNS Ready"
kubectl -n kube-system rollout status deployment/coredns --timeout=180s >&2 || die "CoreDNS not Ready"
phase_done

log "cluster $NAME up in $((SECONDS - UP_START))s; timings: ${TIMINGS[*]}"
kubectl get nodes -o wide >&2
echo "$KUBECONFIG_FILE"
