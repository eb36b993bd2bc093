#!/usr/bin/env bash
# Start pouchdb-server (from the repository's `npm ci`) in memory on a loopback port, with an
# admin user, for trying couchops by hand. The tests start their own; this is for people.
#   scripts/start-pouchdb.sh [PORT]   -> prints the export lines to use it; stop with the PID shown
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-15984}"
bin="$root/node_modules/.bin/pouchdb-server"
[ -x "$bin" ] || { echo "pouchdb-server missing: run 'npm ci' in $root" >&2; exit 1; }
workdir="$(mktemp -d)"
(cd "$workdir" && exec "$bin" --in-memory --host 127.0.0.1 --port "$port" >"$workdir/server.log" 2>&1) &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$workdir/server.log" >&2; exit 1; }
  sleep 0.2
done
password="${COUCHDB_ADMIN_PASSWORD:-admin-password}"
curl -fsS -X PUT "http://127.0.0.1:$port/_config/admins/admin" -d "\"$password\"" >/dev/null
echo "pouchdb-server PID $pid, log $workdir/server.log"
echo "export COUCHDB_URL=http://127.0.0.1:$port COUCHDB_ADMIN_USER=admin COUCHDB_ADMIN_PASSWORD=$password"
