#!/usr/bin/env bash
# Checks by hand, on a real CouchDB release, that the pod of components/couchdb_runtime.py
# works: the image's own entrypoint on a read-only /opt/couchdb, with only the volumes the
# StatefulSet declares writable. No container runtime is needed (none can pull images here):
# a private mount and network namespace plays the container, the mounts are the pod's.
#
#   sudo scripts/check-couchdb-readonly.sh COUCHDB_RELEASE IMAGE_FILES
#     COUCHDB_RELEASE  an unpacked CouchDB 3.5 release (bin/couchdb, etc/, lib/, releases/)
#     IMAGE_FILES      the official image's folder of apache/couchdb-docker (3.5.x): its
#                      docker-entrypoint.sh, vm.args and 10-docker-default.ini
#   ERL=/path/to/erl   an Erlang of the same major, to ping the node with the Secret's cookie
#
# What it builds, as the official Dockerfile does: /opt/couchdb = the release owned by 5984,
# etc/vm.args and etc/default.d/10-docker-default.ini as the image has them. Then, as the
# kubelet would: read-only /opt/couchdb; emptyDirs etc (disk) and erlang-cookie (memory); the
# cookie Secret file 0440 root:5984; the init container's script (the program's own,
# init_script()) run as 5984; the ini files (the program's own renderers) mounted read-only
# on top of the etc copy; the data volume; then the entrypoint as 5984, env as the pod's.
# It prints what it checks and exits non-zero on the first failure. Needs root (mounts,
# namespaces); touches nothing outside its namespace but a scratch directory under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ "$(id -u)" = 0 ] || { echo "needs root (mount and network namespaces)" >&2; exit 2; }
[ $# -eq 2 ] || { sed -n 2,11p "$0" >&2; exit 2; }
release=$(cd "$1" && pwd)
files=$(cd "$2" && pwd)
[ -x "$release/bin/couchdb" ] || { echo "$release has no bin/couchdb" >&2; exit 2; }
for f in docker-entrypoint.sh vm.args 10-docker-default.ini; do
	[ -f "$files/$f" ] || { echo "$files has no $f" >&2; exit 2; }
done

work=$(mktemp -d /tmp/couchdb-readonly.XXXXXX)
made_runtime=
[ -e /runtime ] || { mkdir /runtime && made_runtime=1; }
trap 'rm -rf "$work"; [ -z "$made_runtime" ] || rmdir /runtime' EXIT
image=$work/image
mkdir -p "$image" "$work/config" "$work/secret"
cp -a "$release/." "$image/"
# The official image's etc: its vm.args and 10-docker-default.ini (as in its Dockerfile).
cp "$files/vm.args" "$image/etc/vm.args"
cp "$files/10-docker-default.ini" "$image/etc/default.d/"
mkdir -p "$image/data"
cp "$files/docker-entrypoint.sh" "$image/docker-entrypoint.sh"
chmod 0755 "$image/docker-entrypoint.sh"
# Mount points the container runtime creates in the root filesystem before it turns read-only.
: >"$image/.erlang.cookie"
chown -R 5984:5984 "$image"

# The program's own files: the init script, the cluster ini of a one-node cluster, the
# secrets ini with the admin's pre-hashed entry.
cookie=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$root/.venv/bin/python" - "$work" "$password" <<'EOF'
import sys
from pathlib import Path
from components.couchdb_config import (
    ClusterIni, admin_password_hash, render_cluster_ini, render_secret_ini,
)
from components.couchdb_runtime import init_script
work, password = Path(sys.argv[1]), sys.argv[2]
(work / "init.sh").write_text(init_script())
(work / "config" / "10-cluster.ini").write_text(render_cluster_ini(ClusterIni(
    node_names=["couchdb@127.0.0.1"], shards=2, shard_copies=1, max_document_size_bytes=8 << 20,
)))
(work / "config" / "20-secrets.ini").write_text(render_secret_ini(
    "admin", admin_password_hash(password, "0123456789abcdef0123456789abcdef"),
    "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210",
))
EOF
printf '%s' "$cookie" >"$work/secret/erlangCookie"
chown root:5984 "$work/secret/erlangCookie" "$work/config/"*
chmod 0440 "$work/secret/erlangCookie" "$work/config/"*

unshare --mount --net --fork --propagation private bash -euo pipefail -s \
	"$work" "$password" "${ERL:-}" <<'EOF'
work=$1 password=$2 erl=$3
# Read from the file, not passed as an argument: this shell's own command line is searched.
cookie=$(cat "$work/secret/erlangCookie")
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; exit 1; }
as_couchdb() { setpriv --reuid 5984 --regid 5984 --groups 5984 "$@"; }
ip link set lo up
# A private /opt, /run and /mnt: the container's root filesystem and the pod's volumes.
mount -t tmpfs tmpfs /opt && mkdir /opt/couchdb
mount --bind "$work/image" /opt/couchdb && mount -o remount,bind,ro /opt/couchdb
mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/couchdb-server
mount --bind -o ro "$work/secret" /run/secrets/couchdb-server
mount -t tmpfs tmpfs /mnt && mkdir -p /mnt/etc /mnt/cookie /mnt/data /mnt/tmp
for volume in etc cookie data tmp; do chown root:5984 /mnt/$volume; chmod 2775 /mnt/$volume; done
touch /mnt/started
[ -d /var/run/secrets/couchdb-server ] || fail "/var/run is not /run here"

# The init container: the volumes where it sees them (/runtime/..., a directory made for
# this run and removed after it), the image's root.
mount -t tmpfs tmpfs /runtime && mkdir -p /runtime/etc /runtime/cookie
mount --bind /mnt/etc /runtime/etc && mount --bind /mnt/cookie /runtime/cookie
as_couchdb sh -c "$(cat "$work/init.sh")" || fail "init script"
ok "init script ran as 5984: $(ls /mnt/etc | tr '\n' ' ')"
[ "$(stat -c '%a %u' /mnt/cookie/erlang.cookie)" = "400 5984" ] || fail "cookie file mode"
[ "$(cat /mnt/cookie/erlang.cookie)" = "$cookie" ] || fail "cookie content"
ok "cookie copied from the Secret's file, 0400, owned by 5984"

# The CouchDB container: etc, cookie, data, tmp writable; the ini files read-only on top.
mount --bind /mnt/etc /opt/couchdb/etc
for ini in 10-cluster.ini 20-secrets.ini; do
	mkdir -p /opt/couchdb/etc/local.d && : >/opt/couchdb/etc/local.d/$ini
	mount --bind -o ro "$work/config/$ini" /opt/couchdb/etc/local.d/$ini
done
mount --bind /mnt/cookie/erlang.cookie /opt/couchdb/.erlang.cookie
mount --bind /mnt/data /opt/couchdb/data
mount --bind /mnt/tmp /tmp
as_couchdb touch /opt/couchdb/written 2>/dev/null && fail "/opt/couchdb is writable"
as_couchdb touch /opt/couchdb/etc/local.d/10-cluster.ini 2>/dev/null && fail "10-cluster.ini is writable"
ok "/opt/couchdb and the mounted ini files are read-only to 5984"

cd /opt/couchdb
as_couchdb env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/opt/couchdb ERL_CRASH_DUMP_BYTES=0 \
	NODENAME=127.0.0.1 /opt/couchdb/docker-entrypoint.sh /opt/couchdb/bin/couchdb \
	</dev/null >/mnt/tmp/couchdb.log 2>&1 &
pid=$!
for _ in $(seq 1 60); do
	curl -fsS -u "admin:$password" http://127.0.0.1:5984/ >/dev/null 2>&1 && break
	kill -0 $pid 2>/dev/null || { tail -20 /mnt/tmp/couchdb.log; fail "CouchDB exited"; }
	sleep 1
done
curl -fsS -u "admin:$password" http://127.0.0.1:5984/ | grep -q '"couchdb":"Welcome"' ||
	{ tail -20 /mnt/tmp/couchdb.log; fail "CouchDB does not answer"; }
ok "the image's entrypoint started CouchDB: $(curl -fsS http://127.0.0.1:5984/ -u "admin:$password" | head -c 60)..."
grep -qx -- '-name couchdb@127.0.0.1' /mnt/etc/vm.args || fail "vm.args has no -name"
ok "the entrypoint appended '-name couchdb@127.0.0.1' to the etc copy's vm.args"
curl -fsS -u "admin:$password" http://127.0.0.1:5984/_membership | grep -q 'couchdb@127.0.0.1' ||
	fail "_membership"
curl -fsS -u "admin:$password" -X POST -H 'Content-Type: application/json' \
	-d '{"action":"finish_cluster"}' http://127.0.0.1:5984/_cluster_setup >/dev/null ||
	fail "finish_cluster"
curl -fsS -u "admin:$password" -X PUT -d '"on"' \
	http://127.0.0.1:5984/_node/_local/_config/readonly_check/written >/dev/null || fail "config PUT"
grep -q '^\[readonly_check\]' /mnt/etc/local.d/docker.ini || fail "docker.ini not written"
ok "finish_cluster and a config change written to local.d/docker.ini (the etc emptyDir)"
curl -fsS -u "admin:$password" http://127.0.0.1:5984/_up | grep -q '"status":"ok"' || fail "_up"
curl -fsS -u "admin:$password" -X PUT http://127.0.0.1:5984/probe >/dev/null || fail "PUT db"
curl -fsS -u "admin:$password" -X POST -H 'Content-Type: application/json' -d '{"a":1}' \
	http://127.0.0.1:5984/probe >/dev/null || fail "POST doc"
ok "/_up ok; a database and a document written to the data volume ($(du -sh /mnt/data | cut -f1))"
# CouchDB's processes: the one started above and its children (beam.smp, epmd, couchjs).
for p in $pid $(pgrep -P $pid) $(pgrep -x epmd); do
	tr '\0' ' ' <"/proc/$p/cmdline" | grep -q "$cookie" && fail "cookie on the command line of $p: $(tr '\0' ' ' <"/proc/$p/cmdline")"
	tr '\0' '\n' <"/proc/$p/environ" | grep -q "$cookie" && fail "cookie in the environment of $p"
done
ok "the cookie is on no command line and in no environment"
if [ -n "$erl" ]; then
	answer=$(HOME=/mnt/tmp "$erl" -name probe@127.0.0.1 -setcookie "$cookie" -noshell \
		-eval "io:format(\"~p\", [net_adm:ping('couchdb@127.0.0.1')]), halt()." </dev/null)
	[ "$answer" = pong ] || fail "ping with the Secret's cookie: $answer"
	ok "an Erlang node holding the Secret's cookie pings couchdb@127.0.0.1: $answer"
fi
new=$(find /mnt/etc /mnt/tmp -newer /mnt/started -type f | sed 's|^/mnt/||' | sort | tr '\n' ' ')
ok "files written outside the data volume: $new"
kill $pid; wait $pid 2>/dev/null || true
EOF
