# shellcheck shell=bash
# Sourced by scripts/realpods/up.sh and down.sh (which set NAME, HERE and ROOT): the names,
# addresses and paths of a real-pods cluster, and the steps of up.sh.
# shellcheck disable=SC2034,SC2153 # variables used by the sourcing scripts; NAME is theirs

RP_HOME=${ONBOARDING_REALPODS_HOME:-$HOME/.cache/onboarding-realpods}
STATE="$RP_HOME/$NAME"
KUBECONFIG_FILE="$STATE/kubeconfig"
ARCHIVE=${ONBOARDING_IMAGE_ARCHIVE:-$HOME/.cache/onboarding-images}
# Registry mode (ONBOARDING_REALPODS_PULL=1, for a machine that reaches the registries the stack
# files name): the nodes get a default route through the host, masqueraded, and the host's
# resolvers, so containerd pulls what the archive does not hold. Off by default: nothing leaves.
PULL=${ONBOARDING_REALPODS_PULL:-0}
TOOLCHAIN=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
INFRA_IMAGES="$TOOLCHAIN/realpods-node/images"
# the nodes' dockerd: its data root (the node image) is kept across clusters, as a cache
DOCKER_WORK="$RP_HOME/.dockerd"
export DOCKER_HOST="unix://$DOCKER_WORK/docker.sock"
export DOCKER_CONFIG="$DOCKER_WORK/client-config"

# shared contract (preamble of issue 15): addresses, CIDRs
NETWORK=onb-realpods
BRIDGE=onb-rp0
NODE_SUBNET=172.31.250.0/24
GATEWAY=172.31.250.1
APISERVER="https://$GATEWAY:6443"
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_IP=10.96.0.10
CLUSTER_CIDR=10.244.0.0/16
ETCD_CLIENT=127.0.0.1:32379
ETCD_PEER=127.0.0.1:32380
STACK_FILE="$ROOT/Pulumi.prod.yaml"

log() { printf '[realpods %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	printf '[realpods] ERROR: %s\n' "$*" >&2
	exit 1
}

UP_START=$SECONDS
TIMINGS=()
PHASE=
PHASE_START=0
phase() {
	PHASE=$1
	PHASE_START=$SECONDS
	log "== $PHASE"
}
phase_done() {
	log "== $PHASE: $((SECONDS - PHASE_START))s"
	TIMINGS+=("$PHASE=$((SECONDS - PHASE_START))s")
}

PYTHON="$ROOT/.venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3

# "name zone region" per line, in the stack file's order (node N = line N)
stack_nodes() {
	"$PYTHON" -c '
import sys, yaml
for n in yaml.safe_load(open(sys.argv[1]))["config"]["onboarding:nodePool"]["nodes"]:
    print(n["name"], n["zone"], n["region"])' "$STACK_FILE"
}
node_indexes() { seq "$(stack_nodes | wc -l)"; }
node_field() { stack_nodes | sed -n "${1}p" | cut -d' ' -f"$2"; } # index field(1 name, 2 zone, 3 region)
node_name() { node_field "$1" 1; }
node_ip() { printf '172.31.250.%d' $((10 + $1)); }
pod_cidr() { printf '10.244.%d.0/24' "$1"; }

pid_alive() { # pidfile binary-substring
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

start_daemon() { # name binary args...: start unless its pidfile names a live process
	local name=$1 bin=$2
	shift 2
	if pid_alive "$STATE/pids/$name.pid" "$bin"; then
		log "$name: running (pid $(cat "$STATE/pids/$name.pid"))"
		return
	fi
	# no proxy is reachable: any download attempt fails at once (cluster addresses excepted)
	HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
		NO_PROXY="127.0.0.1,localhost,$NODE_SUBNET,$CLUSTER_CIDR,$SERVICE_CIDR" \
		setsid "$bin" "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$STATE/pids/$name.pid"
	log "$name: started (pid $!, log $STATE/logs/$name.log)"
}

stop_pidfile() { # pidfile binary-substring
	local pid i
	pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
	pid=$(cat "$1")
	kill "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
	rm -f "$1"
	log "stopped $(basename "$1" .pid) (pid $pid, ${i}x0.2s)"
}

# ---------------------------------------------------------------------------------------------
start_dockerd() {
	mkdir -p "$DOCKER_WORK"
	if pid_alive "$DOCKER_WORK/dockerd.pid" dockerd && docker version >/dev/null 2>&1; then
		log "dockerd: running (pid $(cat "$DOCKER_WORK/dockerd.pid"))"
		return
	fi
	# no iptables rules (nodes reach nothing outside), no default bridge, no masquerade,
	# the host's ip_forward left as it is
	setsid dockerd --data-root "$DOCKER_WORK/root" --exec-root "$DOCKER_WORK/exec" -H "$DOCKER_HOST" \
		--pidfile "$DOCKER_WORK/docker.pid" --iptables=false --ip6tables=false --bridge=none \
		--ip-forward=false --ip-masq=false --userland-proxy=false \
		>>"$DOCKER_WORK/dockerd.log" 2>&1 </dev/null &
	echo $! >"$DOCKER_WORK/dockerd.pid"
	local _
	for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
	docker version >/dev/null 2>&1 || die "dockerd did not start (log: $DOCKER_WORK/dockerd.log)"
	log "dockerd: started (pid $(cat "$DOCKER_WORK/dockerd.pid"), $DOCKER_HOST)"
}

stop_dockerd() {
	stop_pidfile "$DOCKER_WORK/dockerd.pid" dockerd
	umount "$DOCKER_WORK/exec/netns/default" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# PKI: openssl, one CA signing every certificate; kept across restarts of the cluster
sign() { # path-prefix subject extensions
	local out=$1 subj=$2 ext=$3
	[ -f "$out.crt" ] && return
	openssl req -new -newkey rsa:2048 -nodes -keyout "$out.key" -subj "$subj" -out "$out.csr" 2>/dev/null
	openssl x509 -req -in "$out.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" -CAcreateserial \
		-days 3650 -extfile <(printf '%b' "$ext") -out "$out.crt" 2>/dev/null
	rm -f "$out.csr"
}
CLIENT_EXT='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n'

make_pki() {
	local p="$STATE/pki" i
	if [ ! -f "$p/ca.crt" ]; then
		openssl req -x509 -new -nodes -newkey rsa:2048 -keyout "$p/ca.key" -out "$p/ca.crt" -days 3650 \
			-subj "/CN=onboarding-realpods-ca" -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
	fi
	sign "$p/apiserver" "/CN=kube-apiserver" \
		"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$GATEWAY,IP:$KUBERNETES_SVC_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
	sign "$p/admin" "/O=system:masters/CN=realpods-admin" "$CLIENT_EXT"
	sign "$p/apiserver-kubelet-client" "/CN=kube-apiserver-kubelet-client" "$CLIENT_EXT"
	sign "$p/controller-manager" "/CN=system:kube-controller-manager" "$CLIENT_EXT"
	sign "$p/scheduler" "/CN=system:kube-scheduler" "$CLIENT_EXT"
	sign "$p/kube-proxy" "/CN=system:kube-proxy" "$CLIENT_EXT"
	for i in $(node_indexes); do
		sign "$p/kubelet-$(node_name "$i")" "/O=system:nodes/CN=system:node:$(node_name "$i")" "$CLIENT_EXT"
	done
	[ -f "$p/sa.key" ] || { openssl genrsa -out "$p/sa.key" 2048 2>/dev/null && openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null; }
	chmod 0600 "$p"/*.key
}

write_kubeconfig() { # file user cert-prefix context-names... (the first is current)
	local file=$1 user=$2 cert=$3 ctx
	shift 3
	{
		printf 'apiVersion: v1\nkind: Config\nclusters:\n- name: realpods\n  cluster:\n'
		printf '    server: %s\n    certificate-authority-data: %s\n' "$APISERVER" "$(base64 -w0 "$STATE/pki/ca.crt")"
		printf 'users:\n- name: %s\n  user:\n' "$user"
		printf '    client-certificate-data: %s\n    client-key-data: %s\n' "$(base64 -w0 "$cert.crt")" "$(base64 -w0 "$cert.key")"
		printf 'contexts:\n'
		for ctx in "$@"; do printf -- '- name: %s\n  context: {cluster: realpods, user: %s}\n' "$ctx" "$user"; done
		printf 'current-context: %s\n' "$1"
	} >"$file.tmp"
	chmod 0600 "$file.tmp"
	mv -f "$file.tmp" "$file"
}

# ---------------------------------------------------------------------------------------------
start_control_plane() {
	local p="$STATE/pki" _
	write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager "$p/controller-manager" default
	write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler "$p/scheduler" default
	start_daemon etcd "$KBIN/etcd" --name realpods --data-dir "$STATE/etcd" \
		--listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
		--listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
		--initial-cluster "realpods=http://$ETCD_PEER" --log-level warn --quota-backend-bytes 4294967296
	start_daemon kube-apiserver "$KBIN/kube-apiserver" \
		--bind-address "$GATEWAY" --advertise-address "$GATEWAY" --secure-port 6443 \
		--etcd-servers "http://$ETCD_CLIENT" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--client-ca-file "$p/ca.crt" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--allow-privileged=true --anonymous-auth=true --profiling=false
	for _ in $(seq 120); do
		curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "$APISERVER/readyz" >/dev/null 2>&1 && break
		pid_alive "$STATE/pids/kube-apiserver.pid" kube-apiserver || die "kube-apiserver exited: $(tail -5 "$STATE/logs/kube-apiserver.log")"
		sleep 0.5
	done
	curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" "$APISERVER/readyz" >/dev/null ||
		die "kube-apiserver not ready after 60s ($STATE/logs/kube-apiserver.log)"
	log "kube-apiserver ready on $APISERVER"
	start_daemon kube-controller-manager "$KBIN/kube-controller-manager" \
		--kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port 0 \
		--use-service-account-credentials --service-account-private-key-file "$p/sa.key" \
		--root-ca-file "$p/ca.crt" --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
		--allocate-node-cidrs=false --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$CLUSTER_CIDR" \
		--controllers '*' --leader-elect=false --node-monitor-grace-period 40s
	start_daemon kube-scheduler "$KBIN/kube-scheduler" \
		--kubeconfig "$STATE/scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port 0 --leader-elect=false
	for _ in $(seq 120); do
		kubectl -n default get serviceaccount default >/dev/null 2>&1 && break
		sleep 0.5
	done
	kubectl -n default get serviceaccount default >/dev/null 2>&1 ||
		die "no default ServiceAccount after 60s: is kube-controller-manager up? ($STATE/logs/kube-controller-manager.log)"
	# the API server's client identity may use the kubelets' API (logs, exec, port-forward)
	kubectl apply -f - >/dev/null <<-EOF
		apiVersion: rbac.authorization.k8s.io/v1
		kind: ClusterRoleBinding
		metadata: {name: realpods:kube-apiserver-kubelet-client}
		roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
		subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}]
	EOF
}

# ---------------------------------------------------------------------------------------------
# per-node configuration, mounted read-only at /etc/onb in the node
node_config() { # index
	local i=$1 name ip dir p="$STATE/pki" j peers=""
	name=$(node_name "$i")
	ip=$(node_ip "$i")
	dir="$STATE/nodes/$name/etc"
	mkdir -p "$dir/pki" "$STATE/nodes/$name/log"
	cp "$p/ca.crt" "$dir/pki/ca.crt"
	write_kubeconfig "$dir/kubelet.kubeconfig" "system:node:$name" "$p/kubelet-$name" default
	write_kubeconfig "$dir/kube-proxy.kubeconfig" kube-proxy "$p/kube-proxy" default
	for j in $(node_indexes); do
		[ "$j" = "$i" ] || peers+="$(pod_cidr "$j")=$(node_ip "$j") "
	done
	cat >"$dir/node.env" <<-EOF
		NODE_NAME=$name
		NODE_IP=$ip
		POD_CIDR=$(pod_cidr "$i")
		CGROUP_ROOT=/$name
		GATEWAY=$GATEWAY
		SERVICE_CIDR=$SERVICE_CIDR
		PEERS="$peers"
		EGRESS=$PULL
		NODE_LABELS=topology.kubernetes.io/region=$(node_field "$i" 3),topology.kubernetes.io/zone=$(node_field "$i" 2)
	EOF
	# no upstream resolver: the node network has no way out; CoreDNS answers cluster names only
	printf '# real-pods: no upstream DNS\noptions ndots:5\n' >"$dir/resolv.conf"
	cat >"$dir/kubelet.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		cgroupDriver: cgroupfs
		cgroupRoot: /$name
		cgroupsPerQOS: true
		failCgroupV1: false
		containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: true}
		  x509: {clientCAFile: /etc/onb/pki/ca.crt}
		authorization: {mode: Webhook}
		clusterDNS: [$DNS_IP]
		clusterDomain: cluster.local
		resolvConf: /etc/onb/resolv.conf
		podCIDR: $(pod_cidr "$i")
		failSwapOn: false
		serializeImagePulls: false
		rotateCertificates: false
		serverTLSBootstrap: false
		protectKernelDefaults: false
		makeIPTablesUtilChains: true
		maxPods: 110
		evictionHard: {memory.available: 100Mi, nodefs.available: 5%, imagefs.available: 5%, nodefs.inodesFree: 2%}
		imageGCHighThresholdPercent: 98
		imageGCLowThresholdPercent: 95
		nodeStatusReportFrequency: 10s
	EOF
	cat >"$dir/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		clientConnection: {kubeconfig: /etc/onb/kube-proxy.kubeconfig}
		hostnameOverride: $name
		mode: iptables
		clusterCIDR: $CLUSTER_CIDR
		iptables: {localhostNodePorts: false}
		nodePortAddresses: [primary]
		# 0: leave the kernel's conntrack settings as they are (the node cannot set them all)
		conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
		metricsBindAddress: 127.0.0.1:10249
		healthzBindAddress: 0.0.0.0:10256
	EOF
	cat >"$dir/containerd.toml" <<-EOF
		version = 3
		root = "/var/lib/containerd"
		state = "/run/containerd"
		[grpc]
		  address = "/run/containerd/containerd.sock"
		[plugins."io.containerd.cri.v1.images"]
		  snapshotter = "overlayfs"
		  [plugins."io.containerd.cri.v1.images".pinned_images]
		    sandbox = "onboarding.local/realpods/pause:$(sed -n 's/^PAUSE_VERSION=//p' "$ROOT/scripts/bootstrap-nodes.sh")"
		[plugins."io.containerd.cri.v1.runtime"]
		  # the node has no CAP_SYS_RESOURCE: a pod's oom_score_adj (the sandbox's -998) is
		  # clamped to the node's own instead of failing runc
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.cri.v1.runtime".containerd]
		    default_runtime_name = "runc"
		    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
		        SystemdCgroup = false
	EOF
	cat >"$dir/10-onb-pods.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "onb-pods",
		  "plugins": [
		    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
		     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$(pod_cidr "$i")"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
		    {"type": "portmap", "capabilities": {"portMappings": true}}
		  ]
		}
	EOF
}

start_nodes() { # node-image
	local image=$1 i name state spec run node_dns=(--dns 127.0.0.1) ns
	mkdir -p "$ARCHIVE" "$INFRA_IMAGES"
	if [ "$PULL" = 1 ]; then # the host's resolvers, for containerd's pulls
		node_dns=()
		while read -r ns; do
			node_dns+=(--dns "$ns")
		done < <(awk '$1 == "nameserver" && $2 !~ /^127\./ {print $2}' /etc/resolv.conf)
		[ ${#node_dns[@]} -gt 0 ] || die "registry mode: no non-loopback nameserver in /etc/resolv.conf for the nodes"
	fi
	for i in $(node_indexes); do
		name=$(node_name "$i")
		node_config "$i"
		run=(--name "$name" --hostname "$name"
			--network "$NETWORK" --ip "$(node_ip "$i")" "${node_dns[@]}"
			--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
			--security-opt apparmor=unconfined --security-opt systempaths=unconfined
			--cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /tmp
			-v "$name-containerd:/var/lib/containerd"
			-v "$name-storage:/opt/local-path-provisioner"
			-v "$STATE/nodes/$name/etc:/etc/onb:ro"
			-v "$STATE/nodes/$name/log:/var/log/onb"
			-v "$INFRA_IMAGES:/images/infra:ro" -v "$ARCHIVE:/images/archive:ro"
			"$image")
		# the kubelet's OOM watcher reads the kernel log
		[ -c /dev/kmsg ] && run=(--device /dev/kmsg "${run[@]}")
		# a container is recreated when its options or its configuration files change
		spec=$({ printf '%s\n' "${run[@]}" && find "$STATE/nodes/$name/etc" -type f -exec cat {} +; } | sha256sum | cut -c1-12)
		state=$(docker inspect -f '{{.State.Status}} {{index .Config.Labels "onboarding.realpods.spec"}}' "$name" 2>/dev/null || true)
		if [ -n "$state" ] && [ "${state#* }" != "$spec" ]; then
			log "$name: started from another image or with other options: recreating it (its volumes are kept)"
			docker rm -f "$name" >/dev/null
			state=
		fi
		case "$state" in
		running*)
			log "$name: running; loading archives added since"
			docker exec "$name" onb-import-images >>"$STATE/nodes/$name/log/import.log" 2>&1 ||
				log "$name: image import failed ($STATE/nodes/$name/log/import.log)"
			;;
		"")
			docker run -d --label "onboarding.realpods=$NAME" --label "onboarding.realpods.spec=$spec" \
				"${run[@]}" >/dev/null 2> >(grep -v 'Localhost DNS' >&2)
			log "$name: started ($(node_ip "$i"), pod CIDR $(pod_cidr "$i"))"
			;;
		*)
			docker start "$name" >/dev/null
			log "$name: restarted (was ${state%% *})"
			;;
		esac
	done
}

wait_nodes_ready() { # timeout-seconds since-epoch: every node Ready, reported after since-epoch
	local deadline=$((SECONDS + $1)) since=$2 want ready status beat
	want=$(node_indexes | wc -l)
	while [ $SECONDS -lt $deadline ]; do
		ready=0
		while read -r status beat; do
			[ "$status" = True ] && [ "$(date -d "$beat" +%s)" -ge "$since" ] && ready=$((ready + 1))
		done < <(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}{"\n"}{end}' 2>/dev/null || true)
		[ "$ready" = "$want" ] && { log "$ready/$want nodes Ready"; return; }
		sleep 2
	done
	kubectl get nodes >&2 || true
	die "not every node Ready after $1s (logs: $STATE/nodes/*/log/)"
}

# ---------------------------------------------------------------------------------------------
install_addons() {
	local coredns_image busybox_image pause_version
	coredns_image="onboarding.local/realpods/coredns:$(sed -n 's/^COREDNS_VERSION=//p' "$ROOT/scripts/bootstrap-nodes.sh")"
	busybox_image=$(tar -xOf "$INFRA_IMAGES/busybox.tar" manifest.json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')
	pause_version=$(sed -n 's/^PAUSE_VERSION=//p' "$ROOT/scripts/bootstrap-nodes.sh")
	: "$pause_version"
	sed -e "s|@COREDNS_IMAGE@|$coredns_image|g" -e "s|@DNS_IP@|$DNS_IP|g" \
		-e "s|@BUSYBOX_IMAGE@|$busybox_image|g" "$HERE/addons.yaml" | kubectl apply -f - >/dev/null
	log "CoreDNS ($coredns_image), local-path StorageClass and its namespace applied"

	# CRDs, the GatewayClass and Envoy Gateway's Gateway status stand-in, as on the KWOK cluster
	local crd_args=() set dir
	for set in prometheus-operator:PROMETHEUS_OPERATOR_VERSION gateway-api:GATEWAY_API_VERSION \
		envoy-gateway:ENVOY_GATEWAY_VERSION cert-manager:CERT_MANAGER_VERSION; do
		dir="$KBIN/../crds/${set%%:*}-v$(sed -n "s/^${set#*:}=//p" "$ROOT/scripts/bootstrap-kube.sh")"
		[ -f "$dir/.complete" ] || die "no CRD set $dir (scripts/bootstrap-kube.sh crds)"
		crd_args+=(--crds "$(cd "$dir" && pwd)")
	done
	"$PYTHON" "$ROOT/scripts/kube/cluster-addons.py" install --real-nodes --kubeconfig "$KUBECONFIG_FILE" \
		--stack-file "$STACK_FILE" "${crd_args[@]}" >>"$STATE/logs/cluster-addons.log" 2>&1 ||
		die "cluster-addons install failed ($STATE/logs/cluster-addons.log)"
	start_daemon cluster-addons "$PYTHON" "$ROOT/scripts/kube/cluster-addons.py" run --gateway-only --kubeconfig "$KUBECONFIG_FILE"

	# the volume provisioner, out of cluster; its helper pods run on the nodes
	"$PYTHON" -c 'import json,sys; print(json.dumps({"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/local-path-provisioner"]}]}))' >"$STATE/local-path-config.json"
	start_daemon local-path-provisioner "$NBIN/local-path-provisioner" --debug start \
		--kubeconfig "$KUBECONFIG_FILE" --config "$STATE/local-path-config.json" \
		--namespace local-path-storage --configmap-name local-path-config \
		--service-account-name local-path-provisioner-service-account \
		--provisioner-name rancher.io/local-path --helper-image "$busybox_image"

	if [ -x "$HERE/cert-manager.sh" ]; then
		"$HERE/cert-manager.sh" start "$STATE" "$KUBECONFIG_FILE" 2>>"$STATE/logs/cert-manager-start.log" ||
			die "cert-manager.sh start failed ($STATE/logs/cert-manager-start.log)"
		log "cert-manager controller ready"
	else
		log "no scripts/realpods/cert-manager.sh: no cert-manager controller"
	fi
	if [ "${ONBOARDING_REALPODS_NETPOL:-1}" = 0 ]; then
		log "ONBOARDING_REALPODS_NETPOL=0: NetworkPolicies are not enforced"
	elif [ -x "$HERE/netpol.sh" ]; then
		# enforcement is best effort: the cluster is usable without it, so a failure is loud, not fatal
		if "$HERE/netpol.sh" start "$STATE" "$KUBECONFIG_FILE" 2>>"$STATE/logs/netpol-start.log"; then
			log "NetworkPolicy enforcer ready"
		else
			log "WARNING: netpol.sh start failed, NetworkPolicies may not be enforced ($STATE/logs/netpol-start.log)"
		fi
	else
		log "no scripts/realpods/netpol.sh: NetworkPolicies are not enforced"
	fi
}
