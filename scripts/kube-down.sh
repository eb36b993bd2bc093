#!/usr/bin/env bash
# Stop the local cluster started by scripts/kube-up.sh and delete its state: the add-ons
# controller (by the PID kube-up.sh recorded, after checking that PID still runs that very
# command), then the control plane and kwok (`kwokctl delete cluster`, which stops the
# processes kwokctl started, by the PIDs it recorded). Nothing else is touched.
#
#   scripts/kube-down.sh [name]        # default: onboarding
set -euo pipefail

NAME=${1:-onboarding}
case "$NAME" in *[!a-z0-9-]* | "") echo "kube-down: cluster name must be [a-z0-9-]+" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
HOME_DIR=${ONBOARDING_KUBE_HOME:-$HOME/.cache/onboarding-kube}
STATE="$HOME_DIR/$NAME"
KUBECONFIG_FILE="$STATE/kubeconfig"
ADDONS_PID="$STATE/cluster-addons.pid"

log() { printf '[kube-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ ! -d "$STATE" ]; then
	log "no cluster $NAME in $HOME_DIR: nothing to do"
	exit 0
fi
start=$SECONDS

if pid=$(cat "$ADDONS_PID" 2>/dev/null) &&
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "cluster-addons.py run --kubeconfig $KUBECONFIG_FILE"; then
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	log "stopped the add-ons controller (pid $pid)"
fi
rm -f "$ADDONS_PID"

if [ -d "$STATE/kwok/clusters/$NAME" ]; then
	KUBE_VERSION=$(sed -n 's/^KUBE_VERSION=//p' scripts/bootstrap-kube.sh)
	KWOKCTL="${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/kube-$KUBE_VERSION/bin/kwokctl"
	[ -x "$KWOKCTL" ] || { log "ERROR: $KWOKCTL is missing; cannot stop cluster $NAME cleanly"; exit 1; }
	HOME="$STATE/home" KWOK_WORKDIR="$STATE/kwok" HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost \
		"$KWOKCTL" --name "$NAME" delete cluster --kubeconfig "$KUBECONFIG_FILE" >&2
fi
rm -rf "$STATE"
log "cluster $NAME deleted in $((SECONDS - start))s"
