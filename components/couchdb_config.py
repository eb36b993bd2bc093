"""CouchDB's ini files, rendered from the cluster's settings. Pure functions.

Two files: a public one (ConfigMap) and one holding the admin hash, the server uuid and
the cookie-auth secret (Secret). Both are mounted into `local.d`, read last by CouchDB,
so they win over the image's defaults.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# CouchDB 3.5's own default PRF and iteration count for pbkdf2 admin hashes.
PBKDF2_PRF = "sha256"
PBKDF2_ITERATIONS = 50_000

HTTP_PORT = 5984
HTTPS_PORT = 6984
EPMD_PORT = 4369
DIST_PORT = 9100
METRICS_PORT = 17986
NODE_URLS = f"https://{{host}}:{HTTPS_PORT}"
"""couchops' COUCHDB_NODE_URLS: each CouchDB pod by its headless-Service DNS name, the host part
of its Erlang node name, so jobs read shard copies from their own node, not relayed."""


NODE_ZONES_ENV = "COUCHDB_NODE_ZONES"
"""The zone of each dedicated node, `<node name>=<zone>` separated by spaces."""
KUBERNETES_NODE_ENV = "KUBERNETES_NODE_NAME"
"""The name of the node the pod runs on (downward API `spec.nodeName`)."""
IMAGE_START = "/docker-entrypoint.sh /opt/couchdb/bin/couchdb"
"""What the official image runs (its ENTRYPOINT's script, its CMD)."""


TLS_DIR = "/var/run/secrets/couchdb-tls"
"""Where each CouchDB pod mounts its cert-manager Secret (`tls.crt`, `tls.key`, `ca.crt`) as a
directory: the kubelet swaps a renewed Secret's files in place there (never with subPath)."""
SSL_DIST_OPTFILE = "/opt/couchdb/etc/ssl_dist.conf"
"""The Erlang distribution's TLS options (`-ssl_dist_optfile`): `render_ssl_dist_optfile`."""


@dataclass(frozen=True)
class TlsFiles:
    """A cert-manager Secret's files as mounted: the node's certificate (served to clients and
    to peers), its private key, and the CA that issued every node's certificate."""

    cert_file: str = f"{TLS_DIR}/tls.crt"
    key_file: str = f"{TLS_DIR}/tls.key"
    ca_file: str = f"{TLS_DIR}/ca.crt"


@dataclass(frozen=True)
class ClusterIni:
    node_names: Sequence[str]
    shards: int
    shard_copies: int
    max_document_size_bytes: int
    # Zone -> copies of each shard range of a new database; empty: no zones.
    placement: Mapping[str, int] = field(default_factory=dict)
    tls: TlsFiles = field(default_factory=TlsFiles)


def node_names(statefulset: str, headless_service: str, namespace: str, replicas: int) -> list[str]:
    """Erlang node names of the StatefulSet's pods, as each pod names itself."""
    return [
        f"couchdb@{statefulset}-{ordinal}.{headless_service}.{namespace}.svc.cluster.local"
        for ordinal in range(replicas)
    ]


def render_cluster_ini(ini: ClusterIni) -> str:
    seedlist = ",".join(ini.node_names)
    return f"""\
; Rendered by the onboarding platform program. Changes are made in the stack config.
[couchdb]
single_node = false
max_document_size = {ini.max_document_size_bytes}
; a database created without an explicit _security is readable by admins only
default_security = admin_only

[cluster]
q = {ini.shards}
n = {ini.shard_copies}
{_placement(ini)}; with a seedlist, /_up answers 404 until this node has synced the system
; databases, which makes it the readiness probe
seedlist = {seedlist}

; CouchDB 3.5 always starts the plain listener, and both listeners bind [chttpd]
; bind_address: {HTTP_PORT} stays bound, but no Service, probe or NetworkPolicy rule leads
; to it. Clients and probes use [ssl] port {HTTPS_PORT}.
[chttpd]
bind_address = any
port = {HTTP_PORT}
require_valid_user = false
require_valid_user_except_for_up = true
max_http_request_size = {max(4 * ini.max_document_size_bytes, 64 * 2**20)}

; HTTPS with the cert-manager certificate (its Secret mounted as a directory, read again by
; Erlang's ssl when the PEM cache is refreshed: a renewal needs no restart)
[ssl]
enable = true
port = {HTTPS_PORT}
cert_file = {ini.tls.cert_file}
key_file = {ini.tls.key_file}
cacert_file = {ini.tls.ca_file}
tls_versions = ['tlsv1.3', 'tlsv1.2']

; The metrics port speaks plain HTTP only (CouchDB 3.5 has no TLS option for it); it carries
; no credentials and answers nothing but /_node/<node>/_prometheus.
[prometheus]
additional_port = true
bind_address = 0.0.0.0
port = {METRICS_PORT}

; No automatic view compaction: CouchDB 3.5.2's view compactor, started while a copy of an
; index has not applied every purge yet, records the database's purge sequence instead of the
; index's, so those purges never reach that copy and its rows of purged documents stay
; readable for good. `couchops purge` compacts views itself once every copy has applied every
; purge (couchops/purge.py, compact). A channel gives a size priority 0, never queued, to a
; file larger than max_size.
[smoosh.ratio_views]
max_size = 0

[smoosh.slack_views]
max_size = 0

[log]
writer = stderr
level = info
"""


def _placement(ini: ClusterIni) -> str:
    if not ini.placement:
        return ""
    if sum(ini.placement.values()) != ini.shard_copies:
        raise ValueError(f"placement {dict(ini.placement)} does not make n={ini.shard_copies}")
    rules = ",".join(f"{zone}:{copies}" for zone, copies in ini.placement.items())
    return f"""\
; copies of each shard range of a new database per zone (the `zone` of each node's document in
; _nodes, which every pod writes from COUCHDB_ZONE at start): losing one zone leaves a quorum.
; It overrides n (the copies sum to it); databases created before keep their shard map.
placement = {rules}
"""


def node_zones_value(node_zones: Mapping[str, str]) -> str:
    """COUCHDB_NODE_ZONES: `<node name>=<zone>` of every dedicated node."""
    return " ".join(f"{node}={zone}" for node, zone in sorted(node_zones.items()))


def zone_start_script(start: str = IMAGE_START) -> str:
    """`sh -c` script that starts CouchDB with COUCHDB_ZONE, the zone of the node the pod
    runs on: CouchDB 3.5 writes it into its own document in `_nodes` at every start. A pod
    cannot read its node's labels in Kubernetes 1.34 (the downward API gives the node's name
    only), so the zone is looked up by that name in COUCHDB_NODE_ZONES, from the stack config
    that also labels the nodes. A node missing there stops the pod with a message, rather
    than start a node no copy of a new database would ever go to. The script holds no `$(`,
    which the kubelet would expand."""
    return f"""\
zone=""
for entry in ${NODE_ZONES_ENV}; do
  case "$entry" in "${KUBERNETES_NODE_ENV}="*) zone="${{entry#*=}}" ;; esac
done
if [ -z "$zone" ]; then
  echo "no zone for node '${KUBERNETES_NODE_ENV}' in {NODE_ZONES_ENV}: ${NODE_ZONES_ENV}" >&2
  exit 1
fi
export COUCHDB_ZONE="$zone"
exec {start}
"""


def admin_password_hash(password: str, salt: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The `[admins]` entry CouchDB itself would write, computed once for every pod.

    Letting each pod hash a plain password (what the official image does) gives every
    pod a different salt, and sessions signed by one pod fail on the next.
    """
    derived = hashlib.pbkdf2_hmac(PBKDF2_PRF, password.encode(), salt.encode(), iterations)
    return f"-pbkdf2:{PBKDF2_PRF}-{derived.hex()},{salt},{iterations}"


def render_secret_ini(
    admin_username: str, admin_hash: str, server_uuid: str, auth_secret: str
) -> str:
    return f"""\
[admins]
{admin_username} = {admin_hash}

[couchdb]
uuid = {server_uuid}

[chttpd_auth]
secret = {auth_secret}
"""


def dist_tls_flags(optfile: str = SSL_DIST_OPTFILE) -> str:
    """`ERL_FLAGS`: the Erlang distribution over TLS. The official image's entrypoint owns
    `etc/vm.args` (it appends `-name` there at every start); erlexec adds these flags after
    that file's, so nothing of the image's has to be edited."""
    return f"-proto_dist inet_tls -ssl_dist_optfile {optfile}"


def render_ssl_dist_optfile(tls: TlsFiles = TlsFiles()) -> str:
    """The `-ssl_dist_optfile` terms: each node presents its certificate to its peers and
    accepts only peers with a certificate of the same CA (`fail_if_no_peer_cert`). A node
    connecting checks that the peer's certificate names the peer's host (OTP sends the host of
    the node name as SNI and verifies it): one certificate naming every pod serves them all.
    TLS 1.3 only: every node runs the same Erlang/OTP."""
    common = f"""\
   {{certfile, "{tls.cert_file}"}},
   {{keyfile, "{tls.key_file}"}},
   {{cacertfile, "{tls.ca_file}"}},
   {{verify, verify_peer}},
   {{versions, ['tlsv1.3']}}"""
    return f"""\
%% Rendered by the onboarding platform program: TLS for the Erlang distribution.
[{{server, [
{common},
   {{fail_if_no_peer_cert, true}}]}},
 {{client, [
{common}]}}].
"""
