#!/usr/bin/env bash
# Check a running real-pods cluster end to end, with timings (a failed check exits non-zero):
#
#   scripts/realpods/check.sh [name] [--faults]     # after scripts/realpods/up.sh [name]
#
#  1. every node of Pulumi.prod.yaml Ready, with its zone label;
#  2. DNS: a pod on node 1 resolves kubernetes.default and a Service's name (CoreDNS);
#  3. pod network: a pod on node 1 reaches a pod on node 2 by its IP, the host reaches a pod IP;
#  4. Services (kube-proxy): from node 1, a ClusterIP whose pod is on the same node, one whose pod
#     is on another node, its own Service (hairpin), and the API server through `kubernetes`;
#  5. volumes: a claim of the default StorageClass binds (local-path) and a pod writes to it;
#  6. restarts: a container killed (SIGKILL from the node) is restarted by its kubelet;
#  7. with --faults: `docker kill` of node 3 -> NotReady, `docker start` -> Ready again.
# Everything runs in the namespace realpods-check, deleted at the end.
# shellcheck disable=SC2015 # `test && ok || ko`: ok always succeeds, so ko runs only on failure
set -euo pipefail

NAME=onboarding-rp
FAULTS=0
for a in "$@"; do
	case "$a" in --faults) FAULTS=1 ;; *) NAME=$a ;; esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=scripts/realpods/common.sh
source "$HERE/common.sh"
KBIN="$TOOLCHAIN/kube-1.34.2/bin"
kubectl() { "$KBIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$STATE/kubectl-cache" "$@"; }
NS=realpods-check
PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); log "PASS $*"; }
ko() { FAILED=$((FAILED + 1)); log "FAIL $*"; }
in_pod() { kubectl -n "$NS" exec "$1" -- "${@:2}"; }
# busybox's wget crashes with its own -T: a timeout around it instead
# (3 tries: a Service created with its pod may need a kube-proxy sync, ~1 s, after the pod is Ready)
fetch() {
	local try out
	for try in 1 2 3; do
		out=$(in_pod "$1" timeout 5 wget -qO- "$2" 2>&1) && break
		[ "$try" = 3 ] || sleep 1
	done
	printf '%s' "$out"
}

[ -f "$KUBECONFIG_FILE" ] || die "no cluster $NAME ($KUBECONFIG_FILE): scripts/realpods/up.sh $NAME"
BUSYBOX=$(tar -xOf "$INFRA_IMAGES/busybox.tar" manifest.json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')
N1=$(node_name 1)
N2=$(node_name 2)
N3=$(node_name 3)

phase "nodes"
want=$(node_indexes | wc -l)
ready=$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.topology\.kubernetes\.io/zone} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
printf '%s\n' "$ready" >&2
[ "$(grep -c ' True$' <<<"$ready")" = "$want" ] && ok "$want/$want nodes Ready" || ko "nodes Ready: $ready"
phase_done

phase "test pods"
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
pod() { # name node
	cat <<-EOF
		apiVersion: v1
		kind: Pod
		metadata: {name: $1, namespace: $NS, labels: {app: $1}}
		spec:
		  nodeName: $2
		  tolerations: [{operator: Exists}]
		  terminationGracePeriodSeconds: 1
		  containers:
		    - name: web
		      image: $BUSYBOX
		      imagePullPolicy: Never
		      command: [sh, -c, 'mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www']
		      readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
		---
		apiVersion: v1
		kind: Service
		metadata: {name: $1, namespace: $NS}
		spec:
		  selector: {app: $1}
		  ports: [{port: 80, targetPort: 8080}]
		---
	EOF
}
{ pod a1 "$N1" && pod a2 "$N1" && pod b "$N2"; } | kubectl apply -f - >/dev/null
kubectl -n "$NS" wait --for=condition=Ready pod/a1 pod/a2 pod/b --timeout=120s >/dev/null &&
	ok "3 pods Ready in $((SECONDS - PHASE_START))s" || ko "pods not Ready: $(kubectl -n "$NS" get pods -o wide)"
B_IP=$(kubectl -n "$NS" get pod b -o jsonpath='{.status.podIP}')
phase_done

phase "DNS"
out=$(in_pod a1 nslookup kubernetes.default.svc.cluster.local 2>&1 || true)
grep -q "Address: $KUBERNETES_SVC_IP" <<<"$out" && ok "kubernetes.default.svc.cluster.local -> $KUBERNETES_SVC_IP" || ko "kubernetes.default: $out"
# the short name through the resolver's search path (ndots 5), then a TCP connection to the API server
out=$(in_pod a1 sh -c 'echo | timeout 5 nc kubernetes.default 443 && echo connected' 2>&1 || true)
grep -q connected <<<"$out" && ok "kubernetes.default:443 (search path, kubernetes Service, API server)" || ko "kubernetes.default:443: $out"
b_svc=$(kubectl -n "$NS" get service b -o jsonpath='{.spec.clusterIP}')
out=$(in_pod a1 nslookup "b.$NS.svc.cluster.local" 2>&1 || true)
grep -q "Address: $b_svc" <<<"$out" && ok "b.$NS.svc.cluster.local -> $b_svc" || ko "service name: $out"
out=$(fetch a1 "http://b.$NS")
[ "$out" = b ] && ok "http://b.$NS (short name, search path) -> pod b" || ko "http://b.$NS: $out"
phase_done

phase "pod network"
out=$(fetch a1 "http://$B_IP:8080")
[ "$out" = b ] && ok "pod on $N1 -> pod on $N2 ($B_IP)" || ko "cross-node pod IP: $out"
out=$(curl -sS -m 5 "http://$B_IP:8080" 2>&1 || true)
[ "$out" = b ] && ok "host -> pod $B_IP" || ko "host -> pod: $out"
phase_done

phase "Services"
for target in a2:"same node" b:"other node" a1:"itself, hairpin"; do
	# the Service's full name: a pod's own short name is its IP in its /etc/hosts
	out=$(fetch a1 "http://${target%%:*}.$NS.svc.cluster.local")
	[ "$out" = "${target%%:*}" ] && ok "ClusterIP ${target%%:*} (${target#*:}) from $N1" || ko "ClusterIP ${target%%:*}: $out"
done
phase_done

phase "volume"
kubectl apply -f - >/dev/null <<-EOF
	apiVersion: v1
	kind: PersistentVolumeClaim
	metadata: {name: data, namespace: $NS}
	spec:
	  accessModes: [ReadWriteOnce]
	  resources: {requests: {storage: 1Gi}}
	---
	apiVersion: v1
	kind: Pod
	metadata: {name: writer, namespace: $NS}
	spec:
	  tolerations: [{operator: Exists}]
	  terminationGracePeriodSeconds: 1
	  containers:
	    - name: w
	      image: $BUSYBOX
	      imagePullPolicy: Never
	      command: [sh, -c, 'echo written-by-writer >/data/proof && exec sleep 3600']
	      volumeMounts: [{name: d, mountPath: /data}]
	  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
EOF
if kubectl -n "$NS" wait --for=condition=Ready pod/writer --timeout=120s >/dev/null; then
	pv=$(kubectl -n "$NS" get pvc data -o jsonpath='{.status.phase} {.spec.volumeName}')
	node=$(kubectl -n "$NS" get pod writer -o jsonpath='{.spec.nodeName}')
	content=$(in_pod writer cat /data/proof)
	on_node=$(docker exec "$node" sh -c "cat /opt/local-path-provisioner/*_${NS}_data/proof" 2>&1 || true)
	[ "$content" = written-by-writer ] && [ "$on_node" = written-by-writer ] &&
		ok "claim $pv, written by a pod on $node, on the node's volume, in $((SECONDS - PHASE_START))s" ||
		ko "volume: pod read '$content', node has '$on_node'"
else
	ko "writer not Ready: $(kubectl -n "$NS" describe pod writer | tail -5)"
fi
phase_done

phase "container killed"
cid=$(docker exec "$N2" crictl ps -q --name web --label "io.kubernetes.pod.namespace=$NS" --label io.kubernetes.pod.name=b)
pid=$(docker exec "$N2" crictl inspect -o go-template --template '{{.info.pid}}' "$cid")
docker exec "$N2" kill -9 "$pid"
killed=$SECONDS
restarted=
while [ $((SECONDS - killed)) -lt 60 ]; do
	st=$(kubectl -n "$NS" get pod b -o jsonpath='{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}')
	[ "$st" = "1 true" ] && { restarted=$((SECONDS - killed)); break; }
	sleep 0.5
done
[ -n "$restarted" ] && ok "container of pod b (pid $pid in $N2) killed: restarted and Ready again in ${restarted}s" || ko "pod b not restarted: $st"
phase_done

if [ $FAULTS = 1 ]; then
	phase "node $N3 killed and started"
	node_ready() { kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'; }
	docker kill "$N3" >/dev/null
	killed=$SECONDS
	while [ "$(node_ready "$N3")" = True ] && [ $((SECONDS - killed)) -lt 120 ]; do sleep 1; done
	[ "$(node_ready "$N3")" != True ] && ok "$N3 killed: NotReady after $((SECONDS - killed))s" || ko "$N3 still Ready after 120s"
	docker start "$N3" >/dev/null
	started=$SECONDS
	while [ "$(node_ready "$N3")" != True ] && [ $((SECONDS - started)) -lt 180 ]; do sleep 1; done
	[ "$(node_ready "$N3")" = True ] && ok "$N3 started: Ready again after $((SECONDS - started))s" || ko "$N3 not Ready 180s after docker start"
	phase_done
fi

kubectl delete namespace "$NS" --wait=false >/dev/null
log "timings: ${TIMINGS[*]}"
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
[ "$FAILED" = 0 ]
