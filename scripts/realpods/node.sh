#!/usr/bin/env bash
# Stop or start one node container of a real-pods cluster, as a machine would fail and come
# back: `kill` sends SIGKILL to the node container (containerd, the kubelet, kube-proxy and every
# pod's processes die at once, nothing is drained or told); `start` starts the same container
# again, with its volumes (the images, the pods' local volumes) as they were, and its
# NetworkPolicy enforcer (scripts/realpods/netpol.sh). The fault tests
# (tests/realpods/test_3_faults.py) use it. As root.
#
#   scripts/realpods/node.sh kill|start NAME NODE      # e.g. kill onboarding-rp onb-node-4
set -euo pipefail

ACTION=${1:-}
NAME=${2:-}
NODE=${3:-}
case "$ACTION" in kill | start) ;; *) echo "usage: $0 kill|start NAME NODE" >&2; exit 2 ;; esac
case "$NAME" in *[!a-z0-9-]* | "") echo "realpods node: cluster name must be [a-z0-9-]+" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/realpods/common.sh
source "$HERE/common.sh"

pid_alive "$DOCKER_WORK/dockerd.pid" dockerd || die "the nodes' dockerd is not running (scripts/realpods/up.sh $NAME)"
label=$(docker inspect -f '{{index .Config.Labels "onboarding.realpods"}}' "$NODE" 2>/dev/null) ||
	die "no node container $NODE"
[ "$label" = "$NAME" ] || die "$NODE belongs to cluster '$label', not '$NAME'"
case "$ACTION" in
kill)
	docker kill "$NODE" >/dev/null
	log "$NODE killed (SIGKILL)"
	;;
start)
	docker start "$NODE" >/dev/null
	log "$NODE started again"
	# the NetworkPolicy enforcer runs by `docker exec`, so it died with the node: started again
	# where the other nodes run it (netpol.sh starts it only where it is missing)
	if [ -x "$HERE/netpol.sh" ] &&
		"$HERE/netpol.sh" status "$STATE" | grep -v "^$NODE " | grep -q 'running=yes'; then
		"$HERE/netpol.sh" start "$STATE" "$KUBECONFIG_FILE" || die "the NetworkPolicy enforcer did not come back on $NODE"
	fi
	;;
esac
