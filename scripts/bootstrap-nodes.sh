#!/usr/bin/env bash
# Build, from Go modules (and pause from its C source), the binaries a real Kubernetes node needs,
# for the real-pods cluster harness (scripts/realpods/): its node containers run them.
#
#   BIN=$(scripts/bootstrap-nodes.sh | tail -1)      # last stdout line = the bin dir
#   scripts/bootstrap-nodes.sh kubelet kube-proxy    # only some artefacts
#
# Result: ${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}/nodes-<kube version>/bin with
#   kubelet, kube-proxy          k8s.io/kubernetes v$KUBE_VERSION through the wrapper module
#                                scripts/kube/nodes (the control plane's wrapper scripts/kube,
#                                tidied for these two; same version ldflags as bootstrap-kube.sh)
#   cni/bridge, cni/host-local,  github.com/containernetworking/plugins v$CNI_VERSION
#   cni/loopback, cni/portmap
#   crictl                       sigs.k8s.io/cri-tools v$CRICTL_VERSION
#   containerd, ctr,             github.com/containerd/containerd/v2 v$CONTAINERD_VERSION
#   containerd-shim-runc-v2
#   runc                         github.com/opencontainers/runc v$RUNC_VERSION (cgo, libseccomp,
#                                static-pie: needs gcc and libseccomp-dev)
#   coredns                      github.com/coredns/coredns v$COREDNS_VERSION
#   local-path-provisioner       github.com/rancher/local-path-provisioner v$LOCAL_PATH_VERSION
#   pause                        build/pause/linux/pause.c of the k8s.io/kubernetes module zip,
#                                gcc -static -Os, stripped
# scripts/realpods/BINARIES.md has the table of what is built from what, and how.
#
# Every binary is static, -trimpath, stripped (-s -w), carries its version variables (its
# --version says the real version; checked after each build), and is written to a temp name and
# renamed. Idempotent: a stamp per binary (version + recipe + go version); a second run only
# checks stamps. Honours GOFLAGS/GOPROXY from the environment; parallelism -p=2 by default
# (NODES_GO_P to change it). Per-step times go to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPES="$HERE/kube/nodes"

KUBE_VERSION=1.34.2
# the control plane's own build identity (the v1.34.2 tag's commit, its day), read from the script
# that builds the control plane so node and control plane binaries report the same
KUBE_COMMIT=$(sed -n 's/^KUBE_COMMIT=//p' "$HERE/bootstrap-kube.sh")
KUBE_BUILD_DATE=$(sed -n 's/^KUBE_BUILD_DATE=//p' "$HERE/bootstrap-kube.sh")
CNI_VERSION=1.10.0
# the cri-tools minor that matches Kubernetes 1.34
CRICTL_VERSION=1.34.0
# Kubernetes 1.34 is tested with containerd 2.1: the newest 2.1 patch the proxy serves
CONTAINERD_VERSION=2.1.9
# runc 1.3 is the series containerd 2.1 ships with: its newest patch served
RUNC_VERSION=1.3.7
COREDNS_VERSION=1.15.0
# the only version of the module the proxy serves
LOCAL_PATH_VERSION=0.0.30
# build/pause/Makefile's TAG in k8s.io/kubernetes v1.34.2
PAUSE_VERSION=3.10.1

CACHE_ROOT=${TOOLCHAIN_CACHE:-$HOME/.cache/onboarding-toolchain}
PREFIX="$CACHE_ROOT/nodes-$KUBE_VERSION"
BIN="$PREFIX/bin"
WORK="$PREFIX/work"
STAMPS="$BIN/.stamps"

log() { printf '[bootstrap-nodes %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bootstrap-nodes] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed: the CNI plugins v$CNI_VERSION ask for it)"
{ [ -n "$KUBE_COMMIT" ] && [ -n "$KUBE_BUILD_DATE" ]; } || die "cannot read KUBE_COMMIT/KUBE_BUILD_DATE from $HERE/bootstrap-kube.sh"
grep -q "^KUBE_VERSION=$KUBE_VERSION\$" "$HERE/bootstrap-kube.sh" ||
	die "scripts/bootstrap-kube.sh builds another Kubernetes version than $KUBE_VERSION: change both"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -p=${NODES_GO_P:-2} -buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
LDSTRIP="-s -w"

recipe_hash() { # files... -> sha256 of their contents and of the Go version
	{ go version; cat "$@"; } | sha256sum | cut -d' ' -f1
}

is_fresh() { # path-under-bin stamp-content
	[ -x "$BIN/$1" ] && [ -f "$STAMPS/${1//\//-}" ] && [ "$(cat "$STAMPS/${1//\//-}")" = "$2" ]
}

mark_fresh() { # path-under-bin stamp-content
	local s="$STAMPS/${1//\//-}"
	printf '%s\n' "$2" >"$s.tmp" && mv -f "$s.tmp" "$s"
}

check_static() { # file
	if readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; then
		die "$1 is dynamically linked"
	fi
}

check_reports() { # file expected-substring command-args...: its version output names the version
	local f=$1 want=$2 out
	shift 2
	out=$("$f" "$@" 2>&1 || true)
	grep -qF -- "$want" <<<"$out" || die "$f $* does not report '$want': $(head -2 <<<"$out")"
	log "  $(basename "$f") $*: $(head -1 <<<"$out")"
}

install_bin() { # tmpfile path-under-bin stamp
	chmod 0755 "$1"
	mkdir -p "$(dirname "$BIN/$2")"
	mv -f "$1" "$BIN/$2"
	mark_fresh "$2" "$3"
}

module_dir() { # module@version -> its directory in the module cache (downloaded if needed)
	local dir
	dir=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || die "go mod download $1 failed (is GOPROXY reachable?)"
	printf '%s' "$dir"
}

# go install pkg@version... into a scratch GOBIN; the caller checks and installs each binary.
# $1 scratch dir, $2 build tags, $3 ldflags, then extra go flags up to "--", then packages.
go_install_to() {
	local out=$1 tags=$2 ldflags=$3 extra=()
	shift 3
	while [ $# -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1") && shift; done
	shift
	rm -rf "$out" && mkdir -p "$out"
	GOBIN="$out" go install -trimpath ${extra[@]+"${extra[@]}"} -tags "$tags" -ldflags "$ldflags" "$@"
}

# go build inside a module's own directory of the module cache, where its go.mod is the main
# module's (`go install pkg@version` refuses a go.mod with exclude or replace directives).
# $1 module@version, $2 scratch dir, $3 build tags, $4 ldflags, then packages relative to the module.
go_build_in_module() {
	local dir out=$2 tags=$3 ldflags=$4
	dir=$(module_dir "$1")
	shift 4
	rm -rf "$out" && mkdir -p "$out"
	(cd "$dir" && go build -mod=readonly -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/" "$@")
}

# ---------------------------------------------------------------------------------------------
# kubelet, kube-proxy: the wrapper module scripts/kube/nodes, built as bootstrap-kube.sh builds
# the control plane (the same version variables)
kube_ldflags() {
	local v="v$KUBE_VERSION" major minor pkg flags="$LDSTRIP"
	major=${KUBE_VERSION%%.*}
	minor=${KUBE_VERSION#*.}
	minor=${minor%%.*}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitCommit=$KUBE_COMMIT -X $pkg.gitTreeState=archive -X $pkg.buildDate=$KUBE_BUILD_DATE"
	done
	printf '%s' "$flags"
}

build_kube_binary() { # binary-name
	local name=$1 stamp src="$WORK/kube-$1" files=("$RECIPES/go.mod" "$RECIPES/go.sum" "$RECIPES/tools.go")
	stamp="$name v$KUBE_VERSION recipe $(recipe_hash "${files[@]}" <(kube_ldflags))"
	if is_fresh "$name" "$stamp"; then log "$name: up to date"; return; fi
	log "$name: building v$KUBE_VERSION"
	rm -rf "$src" && mkdir -p "$src" && cp "${files[@]}" "$src/"
	(cd "$src" && go build -mod=readonly -trimpath -ldflags "$(kube_ldflags)" \
		-o "$BIN/.$name.tmp" "k8s.io/kubernetes/cmd/$name") ||
		die "building $name failed (log above)"
	check_static "$BIN/.$name.tmp"
	check_reports "$BIN/.$name.tmp" "Kubernetes v$KUBE_VERSION" --version
	install_bin "$BIN/.$name.tmp" "$name" "$stamp"
	rm -rf "$src"
}

build_kubelet() { build_kube_binary kubelet; }
build_kube-proxy() { build_kube_binary kube-proxy; }

# ---------------------------------------------------------------------------------------------
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap)

cni_ldflags() {
	printf '%s' "$LDSTRIP -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v$CNI_VERSION"
}

build_cni() {
	local stamp p name fresh=1 pkgs=() out="$WORK/cni-bin"
	stamp="cni plugins v$CNI_VERSION recipe $(recipe_hash <(cni_ldflags) <(declare -f build_cni))"
	for p in "${CNI_PLUGINS[@]}"; do
		is_fresh "cni/${p#*/}" "$stamp" || fresh=0
		pkgs+=("github.com/containernetworking/plugins/plugins/$p@v$CNI_VERSION")
	done
	if [ $fresh = 1 ]; then log "cni: up to date"; return; fi
	log "cni: building ${CNI_PLUGINS[*]} v$CNI_VERSION"
	go_install_to "$out" "" "$(cni_ldflags)" -- "${pkgs[@]}" || die "building the CNI plugins failed (log above)"
	for p in "${CNI_PLUGINS[@]}"; do
		name=${p#*/}
		check_static "$out/$name"
		# run without CNI_COMMAND, a plugin prints "CNI <name> plugin <version>"
		check_reports "$out/$name" "plugin v$CNI_VERSION" version
		install_bin "$out/$name" "cni/$name" "$stamp"
	done
}

# ---------------------------------------------------------------------------------------------
crictl_ldflags() { printf '%s' "$LDSTRIP -X sigs.k8s.io/cri-tools/pkg/version.Version=v$CRICTL_VERSION"; }

build_crictl() {
	local stamp out="$WORK/crictl-bin"
	stamp="crictl v$CRICTL_VERSION recipe $(recipe_hash <(crictl_ldflags) <(declare -f build_crictl))"
	if is_fresh crictl "$stamp"; then log "crictl: up to date"; return; fi
	log "crictl: building v$CRICTL_VERSION"
	go_install_to "$out" "" "$(crictl_ldflags)" -- "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION" ||
		die "building crictl failed (log above)"
	check_static "$out/crictl"
	check_reports "$out/crictl" "v$CRICTL_VERSION" --version
	install_bin "$out/crictl" crictl "$stamp"
}

# ---------------------------------------------------------------------------------------------
# containerd: pure Go (CGO_ENABLED=0); the snapshotters that need cgo or tools a node image has
# not (btrfs, devmapper, zfs) are left out by their build tags: the node uses overlayfs.
CONTAINERD_TAGS="urfave_cli_no_docs osusergo netgo static_build no_btrfs no_devmapper no_zfs"
CONTAINERD_CMDS=(containerd containerd-shim-runc-v2 ctr)

containerd_ldflags() {
	local pkg=github.com/containerd/containerd/v2
	# Revision stays empty: a module zip carries no commit
	printf '%s' "$LDSTRIP -X $pkg/version.Version=v$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
}

build_containerd() {
	local stamp c fresh=1 pkgs=() out="$WORK/containerd-bin"
	stamp="containerd v$CONTAINERD_VERSION recipe $(recipe_hash <(containerd_ldflags) <(declare -f build_containerd go_build_in_module) <(echo "$CONTAINERD_TAGS"))"
	for c in "${CONTAINERD_CMDS[@]}"; do
		is_fresh "$c" "$stamp" || fresh=0
		pkgs+=("./cmd/$c")
	done
	if [ $fresh = 1 ]; then log "containerd: up to date"; return; fi
	log "containerd: building ${CONTAINERD_CMDS[*]} v$CONTAINERD_VERSION (tags: $CONTAINERD_TAGS)"
	# its go.mod has exclude directives: built in its own module directory
	go_build_in_module "github.com/containerd/containerd/v2@v$CONTAINERD_VERSION" "$out" \
		"$CONTAINERD_TAGS" "$(containerd_ldflags)" "${pkgs[@]}" ||
		die "building containerd failed (log above)"
	check_static "$out/containerd" && check_reports "$out/containerd" "v$CONTAINERD_VERSION" --version
	check_static "$out/ctr" && check_reports "$out/ctr" "v$CONTAINERD_VERSION" --version
	check_static "$out/containerd-shim-runc-v2" && check_reports "$out/containerd-shim-runc-v2" "v$CONTAINERD_VERSION" -v
	for c in "${CONTAINERD_CMDS[@]}"; do install_bin "$out/$c" "$c" "$stamp"; done
}

# ---------------------------------------------------------------------------------------------
# runc needs cgo (libcontainer/nsenter is C) and libseccomp for seccomp profiles: upstream's
# `make static` recipe (tags seccomp netgo osusergo, static-pie through the external linker)
runc_ldflags() {
	printf '%s' "$LDSTRIP -linkmode external -extldflags -static-pie"
}

build_runc() {
	local stamp out="$WORK/runc-bin"
	stamp="runc v$RUNC_VERSION recipe $(recipe_hash <(runc_ldflags) <(declare -f build_runc))"
	if is_fresh runc "$stamp"; then log "runc: up to date"; return; fi
	command -v gcc >/dev/null 2>&1 || die "runc needs gcc (apt-get install gcc)"
	[ -f /usr/include/seccomp.h ] || die "runc needs libseccomp's static library and headers (apt-get install libseccomp-dev)"
	log "runc: building v$RUNC_VERSION (cgo, seccomp, static-pie)"
	CGO_ENABLED=1 go_install_to "$out" "seccomp urfave_cli_no_docs netgo osusergo" "$(runc_ldflags)" -buildmode=pie -- \
		"github.com/opencontainers/runc@v$RUNC_VERSION" || die "building runc failed (log above)"
	check_static "$out/runc"
	check_reports "$out/runc" "runc version $RUNC_VERSION" --version
	"$out/runc" --version | grep -q '^libseccomp: ' || die "runc was built without libseccomp"
	install_bin "$out/runc" runc "$stamp"
}

# ---------------------------------------------------------------------------------------------
build_coredns() {
	local stamp out="$WORK/coredns-bin"
	stamp="coredns v$COREDNS_VERSION recipe $(recipe_hash <(declare -f build_coredns))"
	if is_fresh coredns "$stamp"; then log "coredns: up to date"; return; fi
	log "coredns: building v$COREDNS_VERSION (the default plugin set of its plugin.cfg)"
	# the version is a constant of its source (coremain.CoreVersion); GitCommit stays empty
	go_install_to "$out" "" "$LDSTRIP" -- "github.com/coredns/coredns@v$COREDNS_VERSION" ||
		die "building coredns failed (log above)"
	check_static "$out/coredns"
	check_reports "$out/coredns" "CoreDNS-$COREDNS_VERSION" -version
	install_bin "$out/coredns" coredns "$stamp"
}

# ---------------------------------------------------------------------------------------------
build_local-path-provisioner() {
	local stamp out="$WORK/lpp-bin" ldflags="$LDSTRIP -X main.VERSION=v$LOCAL_PATH_VERSION"
	stamp="local-path-provisioner v$LOCAL_PATH_VERSION recipe $(recipe_hash <(declare -f build_local-path-provisioner))"
	if is_fresh local-path-provisioner "$stamp"; then log "local-path-provisioner: up to date"; return; fi
	log "local-path-provisioner: building v$LOCAL_PATH_VERSION"
	go_install_to "$out" "" "$ldflags" -- "github.com/rancher/local-path-provisioner@v$LOCAL_PATH_VERSION" ||
		die "building local-path-provisioner failed (log above)"
	check_static "$out/local-path-provisioner"
	check_reports "$out/local-path-provisioner" "v$LOCAL_PATH_VERSION" --version
	install_bin "$out/local-path-provisioner" local-path-provisioner "$stamp"
}

# ---------------------------------------------------------------------------------------------
# pause: build/pause/Makefile's recipe (CFLAGS -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV),
# REV being `git describe --contains` of the tree: the tag v$KUBE_VERSION here)
pause_cflags() { printf '%s' "-Os -Wall -Werror -static -DVERSION=v$PAUSE_VERSION-v$KUBE_VERSION"; }

build_pause() {
	local stamp src out="$WORK/pause"
	stamp="pause v$PAUSE_VERSION (k8s.io/kubernetes v$KUBE_VERSION) recipe $(recipe_hash <(pause_cflags) <(gcc --version | head -1))"
	if is_fresh pause "$stamp"; then log "pause: up to date"; return; fi
	command -v gcc >/dev/null 2>&1 || die "pause needs gcc (apt-get install gcc)"
	src="$(module_dir "k8s.io/kubernetes@v$KUBE_VERSION")/build/pause/linux/pause.c"
	[ -f "$src" ] || die "no build/pause/linux/pause.c in k8s.io/kubernetes@v$KUBE_VERSION"
	grep -q "^TAG ?= $PAUSE_VERSION\$" "$(dirname "$src")/../Makefile" ||
		die "k8s.io/kubernetes@v$KUBE_VERSION's build/pause/Makefile has another TAG than $PAUSE_VERSION"
	log "pause: building v$PAUSE_VERSION from $src"
	rm -rf "$out" && mkdir -p "$out"
	# shellcheck disable=SC2046 # the flags are words
	gcc $(pause_cflags) -o "$out/pause" "$src" || die "building pause failed (log above)"
	strip "$out/pause"
	check_static "$out/pause"
	check_reports "$out/pause" "pause.c v$PAUSE_VERSION" -v
	install_bin "$out/pause" pause "$stamp"
}

# ---------------------------------------------------------------------------------------------
ALL=(kubelet kube-proxy cni crictl containerd runc coredns local-path-provisioner pause)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
for w in "${WANT[@]}"; do
	case " ${ALL[*]} " in *" $w "*) ;; *) die "unknown artefact '$w' (choose from: ${ALL[*]})" ;; esac
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
echo "$BIN"
