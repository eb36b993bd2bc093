#!/usr/bin/env bash
# Start or stop cert-manager's controller for a real-pods cluster: a host process, out of cluster,
# talking to the API server through the given kubeconfig (scripts/realpods/up.sh calls it).
#
#   scripts/realpods/cert-manager.sh start <state-dir> <kubeconfig>   # returns once ready
#   scripts/realpods/cert-manager.sh stop  <state-dir>                # (a third argument is ignored)
#
# Builds the controller first if needed (scripts/bootstrap-cert-manager.sh: a check only when
# cached), then applies cert-manager's six CRDs (server-side, with kubectl from
# scripts/bootstrap-kube.sh kubectl): the harness's cert-manager.io ones and acme.cert-manager.io's,
# which the controller's informers need even when no ACME issuer exists.
# State in <state-dir>: cert-manager.pid, cert-manager.log, cert-manager.bootstrap.log,
# cert-manager.ports (healthz and metrics ports on 127.0.0.1, free ones picked at start),
# cert-manager.lock (held by the running controller: never two for one state dir).
# Ready = /readyz answers 200: every informer cache has synced, so Issuers and Certificates are
# being reconciled.
# A second start while it runs and is ready does nothing.
#
# It runs without leader election (one instance per cluster), without the webhook and the
# cainjector (see scripts/realpods/ADDONS.md), with ClusterIssuer Secrets in kube-system
# (CERT_MANAGER_CLUSTER_RESOURCE_NAMESPACE to change it). It never reaches outside: HTTP(S) goes
# through a proxy on a closed loopback port (the API server's hosts excepted) and ACME DNS-01
# checks ask a closed loopback port, so an ACME issuer fails instead of calling out.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
READY_TIMEOUT=${CERT_MANAGER_READY_TIMEOUT:-120}
# a loopback port nothing listens on: a proxy that refuses every connection
CLOSED_PORT=9

log() { printf '[cert-manager %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[cert-manager] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: $0 start <state-dir> <kubeconfig> | stop <state-dir>"; }

[ $# -ge 2 ] || usage
ACTION=$1
STATE=$2
PIDFILE="$STATE/cert-manager.pid"
LOGFILE="$STATE/cert-manager.log"
PORTS="$STATE/cert-manager.ports"
LOCKFILE="$STATE/cert-manager.lock"

running_pid() { # prints the pid if the pid file names a live controller process of ours
	local pid
	[ -f "$PIDFILE" ] || return 1
	pid=$(cat "$PIDFILE")
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--kubeconfig" || return 1
	printf '%s' "$pid"
}

is_ready() { # healthz-port
	[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --noproxy '*' "http://127.0.0.1:$1/readyz")" = 200 ]
}

quiet() { # command...: its stderr to the state dir's bootstrap log, shown only if it fails
	"$@" 2>>"$STATE/cert-manager.bootstrap.log" ||
		die "$1 failed; last lines of $STATE/cert-manager.bootstrap.log:$(printf '\n'; tail -20 "$STATE/cert-manager.bootstrap.log")"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

api_hosts() { # kubeconfig -> the hosts of its servers, comma-separated
	sed -n 's|^[[:space:]]*server:[[:space:]]*https\{0,1\}://\([^:/]*\).*|\1|p' "$1" | sort -u | paste -sd, -
}

install_crds() { # kubeconfig crd-dir: server-side apply (the harness may have some already), wait
	local kubectl crds=()
	kubectl="$(quiet "$HERE/../bootstrap-kube.sh" kubectl | tail -1)/kubectl"
	mapfile -t crds < <(find "$2" -name '*.yaml' | sort)
	[ ${#crds[@]} -eq 6 ] || die "expected 6 CRDs in $2, found ${#crds[@]}"
	"$kubectl" --kubeconfig "$1" apply --server-side --field-manager=onboarding-cert-manager \
		"${crds[@]/#/-f}" >/dev/null
	"$kubectl" --kubeconfig "$1" wait --for=condition=Established --timeout=60s \
		"${crds[@]/#/-f}" >/dev/null
	log "CRDs applied and established: ${#crds[@]}"
}

start() {
	local kubeconfig=$1 bin pid healthz metrics hosts waited=0
	[ -r "$kubeconfig" ] || die "kubeconfig $kubeconfig is not readable"
	mkdir -p "$STATE"
	if pid=$(running_pid) && [ -f "$PORTS" ] && is_ready "$(cut -d' ' -f1 "$PORTS")"; then
		log "already running and ready (pid $pid)"
		return
	fi
	# one controller per state dir (there is no leader election): a running one that is not ready
	# is stopped first; the lock, inherited by the controller, refuses a second one even if the
	# pid file was lost
	if running_pid >/dev/null; then
		log "running but not ready: restarting it"
		stop
	fi
	exec 9>>"$LOCKFILE"
	flock -n 9 || die "another controller holds $LOCKFILE (not the one in $PIDFILE): end it first"
	bin=$(quiet "$HERE/../bootstrap-cert-manager.sh" | tail -1)
	install_crds "$kubeconfig" "$bin/../crds"
	hosts=$(api_hosts "$kubeconfig")
	[ -n "$hosts" ] || die "no server: in $kubeconfig"
	healthz=$(free_port)
	metrics=$(free_port)
	[ "$healthz" != "$metrics" ] || metrics=$(free_port)
	printf '%s %s\n' "$healthz" "$metrics" >"$PORTS"
	log "starting $bin/controller (healthz :$healthz, metrics :$metrics, log $LOGFILE)"
	HTTPS_PROXY="http://127.0.0.1:$CLOSED_PORT" HTTP_PROXY="http://127.0.0.1:$CLOSED_PORT" \
		NO_PROXY="$hosts,127.0.0.1,localhost" \
		https_proxy="" http_proxy="" no_proxy="" \
		setsid "$bin/controller" \
		--kubeconfig="$kubeconfig" \
		--cluster-resource-namespace="${CERT_MANAGER_CLUSTER_RESOURCE_NAMESPACE:-kube-system}" \
		--healthz-address="127.0.0.1:$healthz" \
		--metrics-address="127.0.0.1:$metrics" \
		--dns01-recursive-nameservers="127.0.0.1:$CLOSED_PORT" \
		--v="${CERT_MANAGER_LOG_LEVEL:-2}" \
		>>"$LOGFILE" 2>&1 </dev/null &
	pid=$!
	printf '%s\n' "$pid" >"$PIDFILE"
	until is_ready "$healthz"; do
		[ -d "/proc/$pid" ] || die "the controller exited; last lines of $LOGFILE:$(printf '\n'; tail -20 "$LOGFILE")"
		if [ "$waited" -ge "$((READY_TIMEOUT * 2))" ]; then
			stop
			die "not ready after ${READY_TIMEOUT}s, stopped; see $LOGFILE"
		fi
		sleep 0.5
		waited=$((waited + 1))
	done
	log "ready in $((waited / 2)).$((waited % 2 * 5))s (pid $pid)"
}

strays() { # pids of other controllers whose --kubeconfig is a file of this state dir (a start
	# before the lock existed could leave one behind)
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[ "$pid" != "${1:-}" ] || continue
		{ tr '\0' '\n' <"$d/cmdline"; } 2>/dev/null | grep -qxF -- "--kubeconfig=$STATE/kubeconfig" || continue
		readlink "$d/exe" 2>/dev/null | grep -q '/cert-manager-[^/]*/bin/controller$' && printf '%s\n' "$pid"
	done
	return 0
}

end_pid() { # pid: TERM, then KILL after 15 s
	local i
	kill -TERM "$1" 2>/dev/null || return 0
	for i in $(seq 1 30); do
		[ -d "/proc/$1" ] || break
		sleep 0.5
	done
	if [ -d "/proc/$1" ]; then
		log "pid $1 still running after 15s: SIGKILL"
		kill -KILL "$1"
	fi
	log "stopped (pid $1, within $((i / 2 + 1))s)"
}

stop() {
	local pid stray
	if pid=$(running_pid); then
		end_pid "$pid"
	else
		log "not running"
	fi
	rm -f "$PIDFILE"
	for stray in $(strays "$pid"); do
		log "a second controller for this state dir (pid $stray): stopping it too"
		end_pid "$stray"
	done
}

case $ACTION in
start)
	[ $# -eq 3 ] || usage
	start "$3"
	;;
stop) stop ;;
*) usage ;;
esac
