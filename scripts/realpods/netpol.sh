#!/usr/bin/env bash
# Start, stop or inspect the NetworkPolicy enforcer of a real-pods cluster: kube-router in
# firewall-only mode (no router, no service proxy), one process inside each node container, in
# the node's network namespace, beside its kube-proxy (iptables mode) and CNI bridge.
# scripts/realpods/up.sh and down.sh call it.
#
#   scripts/realpods/netpol.sh start  <state-dir> <kubeconfig>   # returns once every node enforces
#   scripts/realpods/netpol.sh stop   <state-dir> [kubeconfig]   # stops it and removes its rules
#   scripts/realpods/netpol.sh status <state-dir>                # one line per node
#
# The nodes are the running containers labelled onboarding.realpods=<basename of state-dir> on
# the harness's dockerd (DOCKER_HOST, set by up.sh; default: its socket under
# ${ONBOARDING_REALPODS_HOME:-~/.cache/onboarding-realpods}/.dockerd/).
# start: builds kube-router if needed (scripts/bootstrap-netpol.sh: a check when cached); creates
# its ServiceAccount and read-only ClusterRole, and a kubeconfig with a token of that account
# (<state-dir>/netpol/kubeconfig); copies the binary, the kubeconfig and a small supervisor
# (restarts kube-router if it exits) into each node (/usr/local/bin, /var/lib/onb-kube-router)
# and starts those not running. Ready = every node has kube-router's filter chains
# (KUBE-ROUTER-FORWARD hooked into FORWARD) and answers its health check. Idempotent: after a
# node container restart (a fault test), run start again: it starts only what is missing.
# Logs: <state-dir>/nodes/<node>/log/kube-router.log (the node's /var/log/onb).
# stop: ends the supervisor and kube-router, then removes kube-router's jumps, chains and ipsets
# in each node (they would otherwise stay in force, unmaintained; kube-router v2.1.0's own
# --cleanup-config leaves them, see write_cleanup).
# The node image needs iptables (with iptables-save/-restore), ipset, bash and timeout (the health
# check; busybox's wget segfaults in the node image): scripts/realpods/ADDONS.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVICE_CIDR=${NETPOL_SERVICE_CIDR:-10.96.0.0/16}
HEALTH_PORT=20244
READY_TIMEOUT=${NETPOL_READY_TIMEOUT:-90}
NODE_DIR=/var/lib/onb-kube-router
SUPERVISOR=/usr/local/bin/onb-kube-router
CLEANUP=/usr/local/bin/onb-kube-router-cleanup
export DOCKER_HOST=${DOCKER_HOST:-unix://${ONBOARDING_REALPODS_HOME:-$HOME/.cache/onboarding-realpods}/.dockerd/docker.sock}

log() { printf '[netpol %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[netpol] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: $0 start <state-dir> <kubeconfig> | stop <state-dir> [kubeconfig] | status <state-dir>"; }

[ $# -ge 2 ] || usage
ACTION=$1
STATE=$2
CLUSTER=$(basename "$STATE")
WORK="$STATE/netpol"

nodes() {
	docker ps --filter "label=onboarding.realpods=$CLUSTER" --filter status=running --format '{{.Names}}' | sort
}

in_node() { docker exec "$@"; } # node command...

running_in() { # node: the supervisor is alive
	in_node "$1" sh -c "[ -s /run/onb-kube-router.pid ] && kill -0 \$(cat /run/onb-kube-router.pid) 2>/dev/null"
}

enforcing_in() { # node: chains in place and the health check answers
	in_node "$1" sh -c "iptables -S FORWARD | grep -q -- '-j KUBE-ROUTER-FORWARD'" &&
		in_node "$1" timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$HEALTH_PORT &&
			printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 '" 2>/dev/null
}

write_supervisor() { # file
	cat >"$1" <<-'EOS'
		#!/bin/bash
		# Written by scripts/realpods/netpol.sh: runs kube-router with the given arguments and
		# restarts it 2 s after it exits; TERM stops both.
		set -u
		echo $$ >/run/onb-kube-router.pid
		child=
		trap '[ -n "$child" ] && kill "$child" 2>/dev/null; wait; rm -f /run/onb-kube-router.pid; exit 0' TERM INT
		while :; do
			/usr/local/bin/kube-router "$@" &
			child=$!
			rc=0
			wait "$child" || rc=$?
			echo "[$(date +%H:%M:%S)] kube-router exited ($rc), restarting in 2 s"
			sleep 2
		done
	EOS
	chmod 0755 "$1"
}

write_cleanup() { # file
	cat >"$1" <<-'EOS'
		#!/bin/bash
		# Written by scripts/realpods/netpol.sh: removes what kube-router's firewall put in this
		# node's network namespace (its jumps from INPUT/FORWARD/OUTPUT, its filter chains, its
		# ipsets), and nothing else: kube-proxy's chains and the CNI's rules stay. kube-router
		# v2.1.0's own --cleanup-config does not do it (its policy cleanup runs without iptables
		# handlers and its service-proxy cleanup panics).
		set -euo pipefail
		for chain in INPUT FORWARD OUTPUT; do
			iptables -w -L "$chain" -n --line-numbers | awk '$2 ~ /^KUBE-ROUTER-/ {print $1}' | sort -rn |
				while read -r n; do iptables -w -D "$chain" "$n"; done
		done
		mapfile -t chains < <(iptables -w -S | awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER-|NWPLCY-|POD-FW-)/ {print $2}')
		for c in "${chains[@]}"; do iptables -w -F "$c"; done
		for c in "${chains[@]}"; do iptables -w -X "$c"; done
		mapfile -t sets < <(ipset list -n | grep -E '^(KUBE-SRC-|KUBE-DST-|kube-router-)' || true)
		for s in "${sets[@]}"; do ipset destroy "$s"; done
		echo "[$(date +%H:%M:%S)] removed ${#chains[@]} chains and ${#sets[@]} ipsets"
	EOS
	chmod 0755 "$1"
}

kubectl_bin() {
	printf '%s/kubectl' "$("$HERE/../bootstrap-kube.sh" kubectl 2>>"$WORK/bootstrap.log" | tail -1)"
}

make_kubeconfig() { # admin-kubeconfig -> $WORK/kubeconfig for kube-router's ServiceAccount
	local k server ca token
	k=$(kubectl_bin)
	"$k" --kubeconfig "$1" apply -f - >/dev/null <<-'EOF'
		apiVersion: v1
		kind: ServiceAccount
		metadata: {name: onb-kube-router, namespace: kube-system}
		---
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRole
		metadata: {name: onb-kube-router}
		rules:
		- apiGroups: [""]
		  resources: [namespaces, pods, services, endpoints, nodes]
		  verbs: [get, list, watch]
		- apiGroups: [discovery.k8s.io]
		  resources: [endpointslices]
		  verbs: [get, list, watch]
		- apiGroups: [networking.k8s.io]
		  resources: [networkpolicies]
		  verbs: [get, list, watch]
		- apiGroups: ["", events.k8s.io]
		  resources: [events]
		  verbs: [create, patch, update]
		---
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRoleBinding
		metadata: {name: onb-kube-router}
		roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: onb-kube-router}
		subjects: [{kind: ServiceAccount, name: onb-kube-router, namespace: kube-system}]
	EOF
	server=$("$k" --kubeconfig "$1" config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')
	ca=$("$k" --kubeconfig "$1" config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
	if [ -z "$server" ] || [ -z "$ca" ]; then die "no server or CA data in $1"; fi
	# a year: the cluster is a test harness; the token dies with the ServiceAccount
	token=$("$k" --kubeconfig "$1" -n kube-system create token onb-kube-router --duration=8760h)
	umask 077
	cat >"$WORK/kubeconfig.tmp" <<-EOF
		apiVersion: v1
		kind: Config
		clusters: [{name: realpods, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
		users: [{name: onb-kube-router, user: {token: "$token"}}]
		contexts: [{name: default, context: {cluster: realpods, user: onb-kube-router}}]
		current-context: default
	EOF
	mv -f "$WORK/kubeconfig.tmp" "$WORK/kubeconfig"
}

start() { # admin-kubeconfig
	local bin node started=() pending deadline
	[ -r "$1" ] || die "kubeconfig $1 is not readable"
	mkdir -p "$WORK"
	mapfile -t all < <(nodes)
	[ ${#all[@]} -gt 0 ] || die "no running node container labelled onboarding.realpods=$CLUSTER (DOCKER_HOST=$DOCKER_HOST)"
	bin=$("$HERE/../bootstrap-netpol.sh" 2>>"$WORK/bootstrap.log" | tail -1) ||
		die "scripts/bootstrap-netpol.sh failed ($WORK/bootstrap.log)"
	make_kubeconfig "$1"
	write_supervisor "$WORK/onb-kube-router"
	for node in "${all[@]}"; do
		if running_in "$node"; then
			log "$node: running"
			continue
		fi
		in_node "$node" mkdir -p "$NODE_DIR"
		docker cp "$bin/kube-router" "$node:/usr/local/bin/kube-router"
		docker cp "$WORK/onb-kube-router" "$node:$SUPERVISOR"
		docker cp "$WORK/kubeconfig" "$node:$NODE_DIR/kubeconfig"
		# shellcheck disable=SC2016 # expanded by the node's sh
		in_node -d "$node" sh -c 'exec "$0" "$@" >>/var/log/onb/kube-router.log 2>&1' "$SUPERVISOR" \
			--kubeconfig="$NODE_DIR/kubeconfig" --hostname-override="$node" \
			--run-firewall=true --run-router=false --run-service-proxy=false \
			--service-cluster-ip-range="$SERVICE_CIDR" --enable-ipv4=true --enable-ipv6=false \
			--health-port="$HEALTH_PORT" --metrics-port=0 --v=1
		started+=("$node")
		log "$node: kube-router started"
	done
	deadline=$((SECONDS + READY_TIMEOUT))
	while :; do
		pending=()
		for node in "${all[@]}"; do enforcing_in "$node" || pending+=("$node"); done
		[ ${#pending[@]} -gt 0 ] || break
		[ $SECONDS -lt $deadline ] ||
			die "not enforcing after ${READY_TIMEOUT}s on: ${pending[*]} (logs: $STATE/nodes/<node>/log/kube-router.log)"
		sleep 1
	done
	log "enforcing on ${#all[@]} node(s) (${#started[@]} started now)"
}

stop() {
	local node pid
	mkdir -p "$WORK"
	write_cleanup "$WORK/onb-kube-router-cleanup"
	mapfile -t all < <(nodes)
	for node in "${all[@]}"; do
		if running_in "$node"; then
			pid=$(in_node "$node" cat /run/onb-kube-router.pid)
			in_node "$node" kill -TERM "$pid"
			for _ in $(seq 20); do
				running_in "$node" || break
				sleep 0.5
			done
			running_in "$node" && in_node "$node" kill -KILL "$pid"
		fi
		docker cp "$WORK/onb-kube-router-cleanup" "$node:$CLEANUP"
		in_node "$node" sh -c "$CLEANUP >>/var/log/onb/kube-router.log 2>&1" ||
			die "$node: removing kube-router's rules failed (see its kube-router.log)"
		log "$node: stopped, its rules and ipsets removed"
	done
}

status() {
	local node
	for node in $(nodes); do
		printf '%s running=%s enforcing=%s\n' "$node" \
			"$(running_in "$node" && echo yes || echo no)" "$(enforcing_in "$node" && echo yes || echo no)"
	done
}

case $ACTION in
start)
	[ $# -eq 3 ] || usage
	start "$3"
	;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
