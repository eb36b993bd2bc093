#!/usr/bin/env bash
# Build a real Kubernetes control plane and KWOK from Go modules, for the deploy-mode
# integration test (scripts/kube-up.sh starts them; tests/integration/test_deploy.py uses them).
#
#   BIN=$(scripts/bootstrap-kube.sh | tail -1)        # last stdout line = the bin dir
#   scripts/bootstrap-kube.sh apiserver etcd          # only some artefacts
#   scripts/bootstrap-kube.sh kubectl                 # kubectl too (not built by default)
#
# Result: ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/kube-<version>/bin with
#   kube-apiserver, kube-controller-manager, kube-scheduler  k8s.io/kubernetes v$KUBE_VERSION, through
#                                the wrapper module scripts/kube (every k8s.io/* staging module
#                                replaced by its v0.x.y release; go.sum committed)
#   etcd                         go.etcd.io/etcd/server/v3 v$ETCD_VERSION, through the wrapper
#                                module scripts/kube/etcd (go.sum committed)
#   kwok, kwokctl                sigs.k8s.io/kwok v$KWOK_VERSION (`go install` as is)
#   kubectl (on request)         k8s.io/kubernetes v$KUBE_VERSION, same wrapper module
# and ../crds/<set>-v<version>/*.yaml (the bin dir's sibling; scripts/kube-up.sh installs them),
# each copied from a Go module zip: monitoring.coreos.com (prometheus-operator), the Gateway API
# standard channel (sigs.k8s.io/gateway-api), gateway.envoyproxy.io (envoyproxy/gateway) and
# cert-manager.io (cert-manager/cert-manager).
#
# All are static (CGO_ENABLED=0), -trimpath, stripped, and carry their version ldflags
# (`kube-apiserver --version` says Kubernetes v$KUBE_VERSION). Idempotent: each artefact has a
# stamp (version + hash of its recipe + go version); a second run only checks stamps. Binaries
# are written to a temp name and renamed. Honours GOFLAGS/GOPROXY from the environment;
# parallelism defaults to -p=2 (KUBE_GO_P to change it). Per-step times go to stderr.
set -euo pipefail

KUBE_VERSION=1.34.2
# the v1.34.2 tag's commit and the module's timestamp (what the upstream release reports in
# /version: gitCommit, and a buildDate of that day); the build is from a module zip, not a
# git tree, hence gitTreeState=archive as upstream's own tarball builds say.
KUBE_COMMIT=8cc511e399b929453cd98ae65b419c3cc227ec79
KUBE_BUILD_DATE=2025-11-11T19:00:37Z
# etcd 3.6 is the series Kubernetes 1.34 is tested with; this is the newest 3.6 patch served.
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0
# the CRDs of the Monitoring component's kinds (PodMonitor, Probe, PrometheusRule, and
# ServiceMonitor), read from the operator's module zip (example/prometheus-operator-crd/);
# v0.85.0 is the only version of that module the proxy serves.
PROMETHEUS_OPERATOR_VERSION=0.85.0
# The edge's kinds: Gateway API's standard channel (GatewayClass, Gateway, HTTPRoute, ...) at
# the version Envoy Gateway's go.mod pins (v1.7.0, the newest, asks for Go 1.27), Envoy
# Gateway's kinds (ClientTrafficPolicy, BackendTrafficPolicy, SecurityPolicy, HTTPRouteFilter), and
# cert-manager's (Certificate, Issuer, ClusterIssuer, CertificateRequest): each read from its
# module zip, the newest version the proxy serves.
GATEWAY_API_VERSION=1.6.1
ENVOY_GATEWAY_VERSION=1.9.1
CERT_MANAGER_VERSION=1.21.2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPES="$HERE/kube"
CACHE_ROOT=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
PREFIX="$CACHE_ROOT/kube-$KUBE_VERSION"
BIN="$PREFIX/bin"
WORK="$PREFIX/work"
STAMPS="$BIN/.stamps"

log() { printf '[bootstrap-kube %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap-kube] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed: etcd 3.6.16 and kwok 0.8 ask for it)"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -p=${KUBE_GO_P:-2} -buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
LDSTRIP="-s -w"

recipe_hash() { # files... -> sha256 of their contents and of the Go version
	{ go version; cat "$@"; } | sha256sum | cut -d' ' -f1
}

is_fresh() { # name stamp-content
	[ -x "$BIN/$1" ] && [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]
}

mark_fresh() { # name stamp-content
	printf '%s\n' "$2" >"$STAMPS/$1.tmp" && mv -f "$STAMPS/$1.tmp" "$STAMPS/$1"
}

install_bin() { # tmpfile name
	chmod 0755 "$1"
	mv -f "$1" "$BIN/$2"
}

# ---------------------------------------------------------------------------------------------
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl: one recipe, four binaries
kube_ldflags() {
	local v="v$KUBE_VERSION" major minor pkg flags="$LDSTRIP"
	major=${KUBE_VERSION%%.*}
	minor=${KUBE_VERSION#*.}
	minor=${minor%%.*}
	# the same variables upstream's hack/lib/version.sh sets, in both packages it sets them in
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitCommit=$KUBE_COMMIT -X $pkg.gitTreeState=archive -X $pkg.buildDate=$KUBE_BUILD_DATE"
	done
	printf '%s' "$flags"
}

build_kube_binary() { # binary-name
	local name=$1 stamp src="$WORK/kube"
	stamp="$name v$KUBE_VERSION recipe $(recipe_hash "$RECIPES/go.mod" "$RECIPES/go.sum" "$RECIPES/tools.go" <(kube_ldflags))"
	if is_fresh "$name" "$stamp"; then log "$name: up to date"; return; fi
	log "$name: building v$KUBE_VERSION (cold: several minutes on 2 cores)"
	rm -rf "$src" && mkdir -p "$src" && cp "$RECIPES/go.mod" "$RECIPES/go.sum" "$RECIPES/tools.go" "$src/"
	(cd "$src" && go build -mod=readonly -trimpath -ldflags "$(kube_ldflags)" \
		-o "$BIN/.$name.tmp" "k8s.io/kubernetes/cmd/$name") ||
		die "building $name failed (log above)"
	# kubectl has no --version flag: `kubectl version --client` says it
	local ver=(--version)
	[ "$name" = kubectl ] && ver=(version --client)
	"$BIN/.$name.tmp" "${ver[@]}" 2>/dev/null | grep -q "v$KUBE_VERSION" ||
		die "$name ${ver[*]} does not report v$KUBE_VERSION: $("$BIN/.$name.tmp" "${ver[@]}" 2>&1 | head -1)"
	install_bin "$BIN/.$name.tmp" "$name"
	mark_fresh "$name" "$stamp"
}

build_apiserver() { build_kube_binary kube-apiserver; }
build_controller-manager() { build_kube_binary kube-controller-manager; }
build_scheduler() { build_kube_binary kube-scheduler; }
build_kubectl() { build_kube_binary kubectl; }

etcd_ldflags() { printf '%s' "$LDSTRIP -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION"; }

build_etcd() {
	local stamp src="$WORK/etcd"
	stamp="etcd v$ETCD_VERSION recipe $(recipe_hash "$RECIPES/etcd/go.mod" "$RECIPES/etcd/go.sum" "$RECIPES/etcd/tools.go" <(etcd_ldflags))"
	if is_fresh etcd "$stamp"; then log "etcd: up to date"; return; fi
	log "etcd: building v$ETCD_VERSION"
	rm -rf "$src" && mkdir -p "$src" && cp "$RECIPES/etcd/go.mod" "$RECIPES/etcd/go.sum" "$RECIPES/etcd/tools.go" "$src/"
	(cd "$src" && go build -mod=readonly -trimpath -ldflags "$(etcd_ldflags)" \
		-o "$BIN/.etcd.tmp" go.etcd.io/etcd/server/v3) ||
		die "building etcd failed (log above)"
	"$BIN/.etcd.tmp" --version 2>/dev/null | grep -q "etcd Version: $ETCD_VERSION" ||
		die "etcd --version does not report $ETCD_VERSION: $("$BIN/.etcd.tmp" --version 2>&1 | head -1)"
	install_bin "$BIN/.etcd.tmp" etcd
	mark_fresh etcd "$stamp"
}

kwok_ldflags() {
	printf '%s' "$LDSTRIP -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$KUBE_VERSION"
}

build_kwok() {
	local stamp tmpbin="$WORK/kwok-bin" c
	stamp="kwok+kwokctl v$KWOK_VERSION recipe $(recipe_hash <(kwok_ldflags))"
	if is_fresh kwok "$stamp" && is_fresh kwokctl "$stamp"; then log "kwok, kwokctl: up to date"; return; fi
	log "kwok, kwokctl: building v$KWOK_VERSION"
	rm -rf "$tmpbin" && mkdir -p "$tmpbin"
	for c in kwok kwokctl; do
		# KubeVersion: the default Kubernetes version kwokctl assumes (kube-up.sh also sets
		# KWOK_KUBE_VERSION); kwok-controller and kwokctl report $KWOK_VERSION.
		GOBIN="$tmpbin" go install -trimpath -ldflags "$(kwok_ldflags)" "sigs.k8s.io/kwok/cmd/$c@v$KWOK_VERSION" || die "building $c failed (log above)"
		"$tmpbin/$c" --version 2>/dev/null | grep -q "$KWOK_VERSION" ||
			die "$c --version does not report $KWOK_VERSION: $("$tmpbin/$c" --version 2>&1 | head -1)"
	done
	for c in kwok kwokctl; do
		mv -f "$tmpbin/$c" "$BIN/.$c.tmp"
		install_bin "$BIN/.$c.tmp" "$c"
		mark_fresh "$c" "$stamp"
	done
}

crd_set() { # dest-name module dir-in-zip group plural...: copy <group>_<plural>.yaml of a module zip
	local name=$1 module=$2 sub=$3 group=$4 dir f n=0
	shift 4
	local dest="$PREFIX/crds/$name"
	# the stamp is the module and the file list: changing either copies again
	if [ -f "$dest/.complete" ] && [ "$(cat "$dest/.complete")" = "$module $sub $group $*" ]; then
		log "crds: $name up to date"
		return
	fi
	log "crds: $name from $module ($sub)"
	dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir/$sub" ] || die "go mod download $module gave no $sub/ (is GOPROXY reachable?)"
	rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
	for f in "$@"; do
		f="${group}_$f.yaml"
		[ -f "$dir/$sub/$f" ] || die "$module has no $sub/$f"
		cp "$dir/$sub/$f" "$dest.tmp/" && n=$((n + 1))
	done
	chmod -R u+w "$dest.tmp" && printf '%s\n' "$module $sub $group $*" >"$dest.tmp/.complete"
	rm -rf "$dest" && mv "$dest.tmp" "$dest"
	log "crds: $name: $n files"
}

# $PREFIX/crds/<set>/*.yaml; scripts/kube-up.sh installs every set listed by crd_dirs
build_crds() {
	crd_set "prometheus-operator-v$PROMETHEUS_OPERATOR_VERSION" \
		"github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" \
		example/prometheus-operator-crd monitoring.coreos.com \
		podmonitors probes prometheusrules servicemonitors
	# the standard channel's CRDs (not its ValidatingAdmissionPolicy, vap_safeupgrades)
	crd_set "gateway-api-v$GATEWAY_API_VERSION" "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" \
		config/crd/standard gateway.networking.k8s.io \
		gatewayclasses gateways httproutes grpcroutes referencegrants backendtlspolicies
	crd_set "envoy-gateway-v$ENVOY_GATEWAY_VERSION" "github.com/envoyproxy/gateway@v$ENVOY_GATEWAY_VERSION" \
		charts/gateway-helm/charts/crds/crds/generated gateway.envoyproxy.io \
		clienttrafficpolicies backendtrafficpolicies securitypolicies httproutefilters
	crd_set "cert-manager-v$CERT_MANAGER_VERSION" "github.com/cert-manager/cert-manager@v$CERT_MANAGER_VERSION" \
		deploy/crds cert-manager.io \
		certificates certificaterequests issuers clusterissuers
}

# ---------------------------------------------------------------------------------------------
ALL=(apiserver controller-manager scheduler etcd kwok crds)
OPTIONAL=(kubectl)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
for w in "${WANT[@]}"; do
	case " ${ALL[*]} ${OPTIONAL[*]} " in *" $w "*) ;; *) die "unknown artefact '$w' (choose from: ${ALL[*]} ${OPTIONAL[*]})" ;; esac
done

mkdir -p "$BIN" "$STAMPS" "$WORK"

total=$SECONDS
for w in "${WANT[@]}"; do
	# one lock per artefact: two bootstraps never build the same thing at once
	exec 9>"$PREFIX/.lock-$w"
	if command -v flock >/dev/null 2>&1; then
		flock -w 7200 9 || die "another bootstrap has held $PREFIX/.lock-$w for 2 hours"
	fi
	start=$SECONDS
	"build_$w"
	log "$w: done in $((SECONDS - start))s"
	exec 9>&-
done
log "all requested artefacts ready in $((SECONDS - total))s"
for b in kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwokctl kubectl; do
	[ -x "$BIN/$b" ] && log "  $b: $(head -c 200 "$STAMPS/$b")"
done
echo "$BIN"
