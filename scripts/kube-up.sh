#!/usr/bin/env bash
# Start a local Kubernetes cluster to deploy the program to: a REAL control plane (etcd,
# kube-apiserver with its default admission plugins and RBAC, kube-controller-manager,
# kube-scheduler, all v1.34.2 built by scripts/bootstrap-kube.sh) with fake nodes and pods from
# KWOK (kwok-controller marks pods Ready, and Job pods Succeeded), all on 127.0.0.1 only.
#
#   KUBECONFIG=$(scripts/kube-up.sh | tail -1)      # last stdout line = the kubeconfig
#   scripts/kube-up.sh other-name                    # a second cluster (default: onboarding)
#   scripts/kube-down.sh [name]                      # stop it (only what this script started)
#
# Then, with that KUBECONFIG, `make up` / `pulumi up` deploys instead of rendering.
#
# The cluster also gets (scripts/kube/cluster-addons.py, which see):
#   - the 5 dedicated nodes named in Pulumi.prod.yaml, with their region and zone labels but
#     without the pool label and taint: the prod stack's NodePatch resources add those;
#     32 CPU / 128Gi / 110 pods allocatable each, room for both stacks;
#   - a default StorageClass served by a stand-in provisioner, the `envoy-gateway`
#     GatewayClass with a stand-in for Envoy Gateway's Gateway status (Programmed, an address),
#     and the CRDs of the Prometheus Operator
#     (PodMonitor, Probe, PrometheusRule, ServiceMonitor), of the Gateway API standard channel,
#     of Envoy Gateway's policies and of cert-manager (versions in scripts/bootstrap-kube.sh).
#
# Everything lives in ${ONBOARDING_KUBE_HOME:-$HOME/.cache/onboarding-kube}/<name>/ (kwokctl's
# workdir, logs, the kubeconfig), never in the repository, and never in ~/.kube/config (which
# would switch every later `make up` on this machine from render mode to deploy mode).
# Idempotent: a running cluster of that name is reused. kwokctl is given a local path for every
# binary and an HTTP(S) proxy on a closed loopback port, so it cannot download anything.
set -euo pipefail

NAME=${1:-onboarding}
case "$NAME" in *[!a-z0-9-]* | "") echo "kube-up: cluster name must be [a-z0-9-]+" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
ROOT=$PWD
HOME_DIR=${ONBOARDING_KUBE_HOME:-$HOME/.cache/onboarding-kube}
STATE="$HOME_DIR/$NAME"
KUBECONFIG_FILE="$STATE/kubeconfig"
ADDONS_PID="$STATE/cluster-addons.pid"

log() { printf '[kube-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[kube-up] ERROR: %s\n' "$*" >&2; exit 1; }

PYTHON="$ROOT/.venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" -c 'import requests, yaml' 2>/dev/null ||
	die "$PYTHON lacks requests/pyyaml (project dependencies): run scripts/setup.sh (make setup)"

start_all=$SECONDS
start=$SECONDS
BIN=$(scripts/bootstrap-kube.sh | tail -1) || die "scripts/bootstrap-kube.sh failed"
KUBE_VERSION=$(sed -n 's/^KUBE_VERSION=//p' scripts/bootstrap-kube.sh)
# one --crds per CRD set bootstrap-kube.sh copied (<set>-v<its version variable>)
CRD_ARGS=()
for set in prometheus-operator:PROMETHEUS_OPERATOR_VERSION gateway-api:GATEWAY_API_VERSION \
	envoy-gateway:ENVOY_GATEWAY_VERSION cert-manager:CERT_MANAGER_VERSION; do
	dir="$BIN/../crds/${set%%:*}-v$(sed -n "s/^${set#*:}=//p" scripts/bootstrap-kube.sh)"
	[ -f "$dir/.complete" ] || die "no CRD set $dir (scripts/bootstrap-kube.sh crds)"
	CRD_ARGS+=(--crds "$(cd "$dir" && pwd)")
done
log "binaries ready in $BIN ($((SECONDS - start))s)"

mkdir -p "$STATE/home"
export KWOK_WORKDIR="$STATE/kwok"
# Any download attempt goes to a closed loopback port and fails at once; loopback itself is
# never proxied.
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export KWOK_RUNTIME=binary KWOK_KUBE_VERSION="v$KUBE_VERSION"
export KWOK_KUBE_APISERVER_BINARY="$BIN/kube-apiserver"
export KWOK_KUBE_CONTROLLER_MANAGER_BINARY="$BIN/kube-controller-manager"
export KWOK_KUBE_SCHEDULER_BINARY="$BIN/kube-scheduler"
export KWOK_ETCD_BINARY="$BIN/etcd"
export KWOK_KWOK_CONTROLLER_BINARY="$BIN/kwok"
[ -x "$BIN/kubectl" ] && export KWOK_KUBECTL_BINARY="$BIN/kubectl"
# HOME too: kwokctl's client keeps a discovery cache in ~/.kube/cache, which is not ours to write.
kwokctl() { HOME="$STATE/home" "$BIN/kwokctl" --name "$NAME" "$@"; }

addons_running() {
	local pid
	pid=$(cat "$ADDONS_PID" 2>/dev/null) || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "cluster-addons.py run --kubeconfig $KUBECONFIG_FILE"
}

api_ready() {
	"$PYTHON" - "$KUBECONFIG_FILE" <<'PY' 2>/dev/null
import sys
sys.path.insert(0, "scripts/kube")
from kubeapi import KubeAPI
sys.exit(0 if KubeAPI(sys.argv[1], timeout=5).get("/readyz").get("text") == "ok" else 1)
PY
}

if [ -f "$KUBECONFIG_FILE" ] && api_ready && addons_running; then
	log "cluster $NAME is already running; reusing it"
	echo "$KUBECONFIG_FILE"
	exit 0
fi
if [ -d "$KWOK_WORKDIR/clusters/$NAME" ]; then
	log "cluster $NAME exists but is not healthy: deleting it first"
	scripts/kube-down.sh "$NAME" >&2
	mkdir -p "$STATE/home"
fi

# Options kwokctl has no flag for (bindAddress) and the rest, so a reader sees them in one place.
cat >"$STATE/kwokctl.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeVersion: v$KUBE_VERSION
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  quietPull: true
  cacheDir: $STATE/kwok-cache
  kubeApiserverBinary: $BIN/kube-apiserver
  kubeControllerManagerBinary: $BIN/kube-controller-manager
  kubeSchedulerBinary: $BIN/kube-scheduler
  etcdBinary: $BIN/etcd
  kwokControllerBinary: $BIN/kwok
EOF

start=$SECONDS
log "creating cluster $NAME (kwokctl, binary runtime, 127.0.0.1)"
kwokctl --config "$STATE/kwokctl.yaml" create cluster \
	--kubeconfig "$KUBECONFIG_FILE" --wait 3m >"$STATE/kwokctl-create.log" 2>&1 ||
	{ cat "$STATE/kwokctl-create.log" >&2; die "kwokctl create cluster failed (log above; components' logs in $KWOK_WORKDIR/clusters/$NAME/logs)"; }
log "control plane up in $((SECONDS - start))s"

start=$SECONDS
"$PYTHON" scripts/kube/cluster-addons.py install --kubeconfig "$KUBECONFIG_FILE" \
	--stack-file Pulumi.prod.yaml "${CRD_ARGS[@]}" >&2 || die "installing the cluster add-ons failed"
nohup "$PYTHON" scripts/kube/cluster-addons.py run --kubeconfig "$KUBECONFIG_FILE" \
	>"$STATE/cluster-addons.log" 2>&1 &
echo $! >"$ADDONS_PID"
sleep 1
addons_running || { cat "$STATE/cluster-addons.log" >&2; die "the cluster add-ons controller did not start"; }
log "nodes and add-ons ready in $((SECONDS - start))s (controller pid $(cat "$ADDONS_PID"), log $STATE/cluster-addons.log)"

log "cluster $NAME ready in $((SECONDS - start_all))s; KUBECONFIG=$KUBECONFIG_FILE"
echo "$KUBECONFIG_FILE"
