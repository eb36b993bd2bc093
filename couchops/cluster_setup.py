"""`cluster-setup`: bring a CouchDB cluster to the state the platform expects, idempotently.

Safe on every deploy: each step reads the current state first and writes only what differs,
and the run ends by saying how many changes it made ("nothing to change" on a second run).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from couchops.accounts import PLATFORM_MARK, account_id
from couchops.couch import JSON, Couch, db_path, doc_path
from couchops.errors import CouchError, OpsError
from couchops.log import logger
from couchops.pseudonym import label
from couchops.purge import index_fields, purge_index_specs
from couchops.settings import Settings

SYSTEM_DATABASES = ("_users", "_replicator")
AGREEING_READS = 3
"""Consecutive identical `_membership` answers required: each read may land on another node."""
ZONE = "zone"
"""The field of a node's document in `_nodes` that CouchDB's placement rule reads."""
NO_ZONE = "(no zone)"
ZONES_SETTLE_SECONDS = 60.0
"""How long the nodes' copies of `_nodes` may take to agree on the zones (mem3 replicates
them between nodes; each pod writes its own zone when it starts)."""
MISPLACED_SHOWN = 20
"""Databases named one by one in the report of shard maps that break the placement rule."""


@dataclass
class SetupReport:
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nodes: int = 0

    def change(self, what: str, **details: Any) -> None:
        self.changes.append(what)
        logger().info("cluster_setup.changed", change=what, **details)

    def warn(self, what: str, **details: Any) -> None:
        self.warnings.append(what)
        logger().warning("cluster_setup.warning", warning=what, **details)


def index_specs(settings: Settings, partitioned: bool) -> list[JSON]:
    """The Mango indexes of the consolidated database: the purge's two (global), and one on
    the creation timestamp within a partition for the application's per-user queries."""
    field_name = settings.purge_timestamp_field
    specs = purge_index_specs(field_name, partitioned)
    if partitioned:
        specs.append(
            {
                "index": {"fields": [field_name]},
                "ddoc": f"couchops-by-{field_name}-in-partition",
                "name": f"by-{field_name}-in-partition",
                "type": "json",
                "partitioned": True,
            }
        )
    return specs


def desired_security(settings: Settings) -> JSON:
    """Admins by role; members: the application's user, or admins only when there is none.

    Never an empty members list: CouchDB would then open the database to every user.
    """
    members: JSON = (
        {"names": [settings.app_user.get_secret_value()], "roles": []}
        if settings.app_user is not None
        else {"names": [], "roles": ["_admin"]}
    )
    return {"admins": {"names": [], "roles": ["_admin"]}, "members": members}


def _normalise_security(doc: JSON) -> JSON:
    out: JSON = {}
    for section in ("admins", "members"):
        part = doc.get(section) or {}
        out[section] = {
            "names": sorted(part.get("names") or []),
            "roles": sorted(part.get("roles") or []),
        }
    return out


def wait_for_cluster(
    couch: Couch,
    settings: Settings,
    report: SetupReport,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll_seconds: float = 2.0,
) -> list[str]:
    """Wait, within COUCHDB_SETUP_TIMEOUT_SECONDS, until every expected node is a member and
    answers, and `_membership` agrees on several reads in a row; add missing nodes."""
    log = logger()
    deadline = clock() + settings.setup_timeout_seconds
    expected = set(settings.nodes)
    added: set[str] = set()
    agreeing = 0
    last_problem = "no answer yet"
    previous: tuple[frozenset[str], frozenset[str]] | None = None
    while True:
        problem = None
        try:
            problem = _up_problem(couch)
            if problem is None:
                membership = couch.get("/_membership")
                all_nodes = frozenset(membership.get("all_nodes") or [])
                cluster_nodes = frozenset(membership.get("cluster_nodes") or [])
                want = expected or set(cluster_nodes)
                for node in sorted(want - cluster_nodes - added):
                    couch.put(f"/_node/_local/_nodes/{quote(node, safe='')}", {}, ok=(201, 202))
                    added.add(node)
                    report.change(f"added node {node} to the cluster", node=node)
                problem = _membership_problem(want, all_nodes, cluster_nodes)
                if problem is None and previous not in (None, (all_nodes, cluster_nodes)):
                    problem = "_membership answers differ from one read to the next"
                previous = (all_nodes, cluster_nodes)
        except CouchError as exc:
            if exc.status in (401, 403):
                raise
            problem = str(exc)
        if problem is None:
            agreeing += 1
            if agreeing >= AGREEING_READS:
                nodes = sorted(previous[1]) if previous else []
                log.info("cluster_setup.nodes_ready", nodes=nodes)
                return nodes
        else:
            agreeing = 0
            if problem != last_problem:
                log.info("cluster_setup.waiting", reason=problem)
            last_problem = problem
        if clock() >= deadline:
            raise OpsError(
                f"cluster not ready after {settings.setup_timeout_seconds:g}s: {last_problem}"
            )
        sleep(poll_seconds if problem else 0.2)


def _up_problem(couch: Couch) -> str | None:
    response = couch.request("GET", "/_up", ok=(200, 404, 503))
    if response.status_code == 200:
        return None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 404 and body.get("error") == "not_found":
        # A server without /_up at all (pouchdb-server): nothing to wait for here.
        return None
    return f"/_up answers {response.status_code} (status {body.get('status', '?')})"


def _membership_problem(
    want: set[str], all_nodes: frozenset[str], cluster_nodes: frozenset[str]
) -> str | None:
    if missing := sorted(want - cluster_nodes):
        return f"nodes not yet members of the cluster: {', '.join(missing)}"
    if silent := sorted(cluster_nodes - all_nodes):
        return f"member nodes not answering: {', '.join(silent)}"
    if unknown := sorted(all_nodes - cluster_nodes):
        return f"connected nodes not in the cluster's membership: {', '.join(unknown)}"
    return None


@dataclass(frozen=True)
class Placement:
    """CouchDB's `[cluster] placement`: zone -> copies of each shard range of a new database.
    It overrides `n`: a database gets the sum of the copies."""

    copies: Mapping[str, int]

    @classmethod
    def parse(cls, text: str) -> Placement:
        """`zone:copies,...`, as CouchDB reads it (mem3:decode_placement_string)."""
        copies: dict[str, int] = {}
        for rule in text.split(","):
            zone, sep, count = rule.strip().partition(":")
            if not sep or not zone or not count.isdigit() or int(count) < 1 or zone in copies:
                raise ValueError(f"{rule.strip()!r} is not zone:copies (a zone once, copies >= 1)")
            copies[zone] = int(count)
        return cls(copies)

    @property
    def total(self) -> int:
        return sum(self.copies.values())

    def __str__(self) -> str:
        return ",".join(f"{zone}:{count}" for zone, count in self.copies.items())


def _node_path(node: str) -> str:
    """`/_node/{node}`: requests under it are answered by that node itself."""
    return f"/_node/{quote(node, safe='@')}"


def configured_placement(couch: Couch, nodes: list[str]) -> Placement | None:
    """The `[cluster] placement` every node applies (`GET /_node/{node}/_config/cluster/
    placement`, 404 while unset), or None. Nodes that differ are refused: the copies of a new
    database would depend on the node that happens to create it."""
    found: dict[str, str | None] = {}
    for node in nodes:
        response = couch.request(
            "GET", f"{_node_path(node)}/_config/cluster/placement", ok=(200, 404)
        )
        found[node] = str(response.json()) if response.status_code == 200 else None
    values = set(found.values())
    if len(values) > 1:
        described = ", ".join(f"{node}: {value or 'unset'}" for node, value in found.items())
        raise OpsError(f"the nodes disagree on [cluster] placement: {described}")
    value = next(iter(values), None)
    if value is None:
        return None
    try:
        return Placement.parse(value)
    except ValueError as exc:
        raise OpsError(f"[cluster] placement = {value} cannot be read: {exc}") from None


def ensure_zones(
    couch: Couch, zones: Mapping[str, str], members: list[str], report: SetupReport
) -> None:
    """Set, or correct, the `zone` of each node's document in `_nodes`, keeping its `_rev`
    and every other field (CouchDB replicates the document to the other nodes)."""
    if unknown := sorted(set(zones) - set(members)):
        raise OpsError(f"zones given for nodes that are not cluster members: {', '.join(unknown)}")
    for node, zone in sorted(zones.items()):
        path = f"/_node/_local/_nodes/{quote(node, safe='')}"
        doc = couch.get(path)
        if doc.get(ZONE) == zone:
            continue
        couch.put(path, {**doc, ZONE: zone})
        report.change(f"set the zone of node {node} to {zone}", previous=doc.get(ZONE))


def zones_seen(couch: Couch, nodes: list[str]) -> dict[str, dict[str, str | None]]:
    """Each node's own copy of `_nodes` (viewer -> node -> zone, None when it has none): a
    node places a new database's copies by its own copy."""
    seen: dict[str, dict[str, str | None]] = {}
    for viewer in nodes:
        rows = couch.get(
            f"{_node_path(viewer)}/_nodes/_all_docs", params={"include_docs": True}
        ).get("rows", [])
        seen[viewer] = {
            str(row["id"]): _zone_of(row.get("doc"))
            for row in rows
            if not str(row["id"]).startswith("_design/")
        }
    return seen


def _zone_of(doc: Any) -> str | None:
    zone = doc.get(ZONE) if isinstance(doc, dict) else None
    return zone if isinstance(zone, str) and zone else None


def _zone_disagreement(seen: dict[str, dict[str, str | None]], nodes: list[str]) -> str | None:
    differing = []
    for node in nodes:
        views = {viewer: seen[viewer].get(node) for viewer in nodes}
        if len(set(views.values())) > 1:
            on = ", ".join(f"{zone or NO_ZONE} on {viewer}" for viewer, zone in views.items())
            differing.append(f"{node}: {on}")
    return "; ".join(differing) or None


def check_zones(
    couch: Couch,
    nodes: list[str],
    placement: Placement,
    report: SetupReport,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Wait, within ZONES_SETTLE_SECONDS, until every node's copy of `_nodes` gives each node
    the same zone; then refuse what would place copies against `placement`: a node without a
    zone (CouchDB never gives it a copy of a new database) or a zone with fewer nodes than
    its copies (CouchDB then quietly makes fewer copies, or cannot create databases at all
    when the zone has none). Answers node -> zone."""
    deadline = clock() + ZONES_SETTLE_SECONDS
    while True:
        seen = zones_seen(couch, nodes)
        disagreement = _zone_disagreement(seen, nodes)
        if disagreement is None:
            break
        if clock() >= deadline:
            raise OpsError(
                f"the nodes' copies of _nodes still disagree on zones after "
                f"{ZONES_SETTLE_SECONDS:g}s: {disagreement}"
            )
        sleep(1.0)
    zones = seen[nodes[0]] if nodes else {}
    if missing := [node for node in nodes if zones.get(node) is None]:
        raise OpsError(
            f"[cluster] placement is {placement}, but nodes without a zone in _nodes would get "
            f"no copy of any new database: {', '.join(missing)} (a CouchDB pod writes its "
            "zone from COUCHDB_ZONE when it starts; see docs/zone-placement.md)"
        )
    placed = {node: str(zones[node]) for node in nodes}
    members = Counter(placed.values())
    if short := [zone for zone, count in placement.copies.items() if members[zone] < count]:
        described = "; ".join(
            f"{zone} wants {placement.copies[zone]}, has {members[zone]} "
            f"({', '.join(n for n, z in placed.items() if z == zone) or 'no node'})"
            for zone in short
        )
        raise OpsError(
            f"[cluster] placement {placement} wants more copies in a zone than it has nodes: "
            f"{described} (CouchDB would make fewer copies, or fail to create the database)"
        )
    if idle := [node for node, zone in placed.items() if zone not in placement.copies]:
        report.warn(
            f"nodes in a zone that [cluster] placement {placement} leaves out get no copy of "
            f"any new database: {', '.join(f'{node} ({placed[node]})' for node in idle)}"
        )
    return placed


def misplaced_ranges(
    shard_map: JSON, placement: Placement, zones: Mapping[str, str]
) -> dict[str, Counter[str]]:
    """The shard ranges of a database (its document in `_dbs`) whose copies are not spread
    over the zones as `placement` says: range -> copies per zone."""
    wanted = Counter(placement.copies)
    found: dict[str, Counter[str]] = {}
    for shard_range, holders in sorted((shard_map.get("by_range") or {}).items()):
        copies = Counter(zones.get(node, NO_ZONE) for node in holders)
        if copies != wanted:
            found[shard_range] = copies
    return found


def report_misplaced_databases(
    couch: Couch, placement: Placement, zones: Mapping[str, str], report: SetupReport
) -> int:
    """Report the databases whose shard map breaks `placement` (created before it, or with
    an `n` or placement of their own): CouchDB keeps a database's shard map for good, so the
    rule reaches them only when their copies are moved (docs/zone-placement.md). Answers
    how many there are."""
    found = 0
    for shard_map in couch.shard_maps(""):
        db = str(shard_map.get("_id", ""))
        misplaced = misplaced_ranges(shard_map, placement, zones)
        if db.startswith("_design/") or not misplaced:
            continue
        found += 1
        if found <= MISPLACED_SHOWN:
            total = len(shard_map.get("by_range") or {})
            report.warn(_misplaced_text(label(db), misplaced, total, placement))
    if found > MISPLACED_SHOWN:
        report.warn(f"{found} databases in all have shard ranges not placed as {placement}")
    return found


def _misplaced_text(
    db: str, misplaced: dict[str, Counter[str]], total: int, placement: Placement
) -> str:
    shard_range, copies = next(iter(misplaced.items()))
    spread = ",".join(f"{zone}:{count}" for zone, count in sorted(copies.items()))
    text = (
        f"database {db}: {len(misplaced)} of its {total} shard ranges are not placed as "
        f"[cluster] placement {placement} says (e.g. {shard_range}: {spread})"
    )
    for shard_range, copies in misplaced.items():
        held = sum(copies.values())
        quorum = held // 2 + 1
        zone, most = copies.most_common(1)[0]
        if held - most < quorum:
            return (
                f"{text}; losing zone {zone} would leave range {shard_range} "
                f"{held - most} of its {held} copies, below its quorum of {quorum}"
            )
    return text


def finish_cluster(couch: Couch, nodes: list[str], report: SetupReport) -> None:
    """`finish_cluster` once a multi-node cluster is formed; a single node needs none."""
    if len(nodes) < 2:
        return
    state = couch.get("/_cluster_setup").get("state")
    if state == "cluster_finished":
        return
    response = couch.request(
        "POST", "/_cluster_setup", body={"action": "finish_cluster"}, ok=(200, 201, 400)
    )
    if response.status_code == 400:
        reason = str(response.json().get("reason", ""))
        if "already finished" not in reason.lower():
            raise CouchError(f"finish_cluster refused: {reason}", status=400)
        return
    report.change("finished the cluster setup (finish_cluster)", previous_state=state)


def ensure_system_databases(couch: Couch, report: SetupReport) -> None:
    for name in SYSTEM_DATABASES:
        if couch.db_info(name) is None:
            couch.request("PUT", db_path(name), ok=(201, 202, 412))
            report.change(f"created system database {name}")


def ensure_database(couch: Couch, settings: Settings, report: SetupReport) -> bool:
    """Create the consolidated database if absent; answer whether it is partitioned."""
    name = settings.database
    info = couch.db_info(name)
    if info is None:
        couch.request(
            "PUT",
            db_path(name),
            params={"partitioned": True, "q": settings.shards, "n": settings.replicas},
            ok=(201, 202, 412),
        )
        report.change(
            f"created database {name}", q=settings.shards, n=settings.replicas, partitioned=True
        )
        info = couch.db_info(name) or {}
    props = info.get("props")
    if props is None:
        report.warn(
            "the server does not report database properties (no partitioned databases)",
            database=name,
        )
        return False
    if not props.get("partitioned"):
        raise OpsError(
            f"database {name} exists but is not partitioned: it cannot be converted in place; "
            "migrate it with `couchops consolidate` into a new partitioned database"
        )
    cluster = info.get("cluster") or {}
    if cluster and (cluster.get("q"), cluster.get("n")) != (settings.shards, settings.replicas):
        report.warn(
            f"database {name} has q={cluster.get('q')} n={cluster.get('n')}, settings say "
            f"q={settings.shards} n={settings.replicas}: shards are fixed at creation",
            database=name,
        )
    return True


def ensure_purged_infos_limit(couch: Couch, settings: Settings, report: SetupReport) -> None:
    if settings.purged_infos_limit is None:
        return
    path = f"{db_path(settings.database)}/_purged_infos_limit"
    current = couch.get(path)
    if current != settings.purged_infos_limit:
        couch.put(path, settings.purged_infos_limit)
        report.change(
            f"set _purged_infos_limit of {settings.database} to {settings.purged_infos_limit}",
            previous=current,
        )


def ensure_indexes(
    couch: Couch, settings: Settings, partitioned: bool, report: SetupReport
) -> None:
    """Create the indexes, and redefine one whose fields differ from its spec (CouchDB
    replaces an index posted under an existing design document and name)."""
    path = f"{db_path(settings.database)}/_index"
    existing = {
        (str(ix.get("ddoc") or ""), str(ix.get("name") or "")): index_fields(ix)
        for ix in couch.get(path).get("indexes", [])
    }
    for spec in index_specs(settings, partitioned):
        fields = existing.get((f"_design/{spec['ddoc']}", spec["name"]))
        if fields == spec["index"]["fields"]:
            continue
        result = couch.post(path, spec)
        if result.get("result") == "created":
            verb = "created" if fields is None else "redefined"
            report.change(f"{verb} index {spec['name']} on {settings.database}")


def ensure_app_user(couch: Couch, settings: Settings, report: SetupReport) -> None:
    """The application's CouchDB user, with the password from its Secret (checked by logging
    in with it, since only a hash is stored)."""
    if settings.app_user is None and settings.app_password is None:
        return
    if settings.app_user is None or settings.app_password is None:
        raise OpsError(
            "application credentials are half set: give both COUCHDB_APP_USER(_FILE) "
            "and COUCHDB_APP_PASSWORD(_FILE)"
        )
    name = settings.app_user.get_secret_value()
    password = settings.app_password.get_secret_value()
    try:
        session = requests.get(
            couch.url + "/_session",
            auth=(name, password),
            timeout=couch.timeout,
            verify=couch.verify,
        )
        logged_in = (
            session.status_code == 200 and session.json().get("userCtx", {}).get("name") == name
        )
    except requests.RequestException as exc:
        raise CouchError(f"CouchDB at {couch.url} is unreachable ({exc})") from exc
    doc_id = account_id(name)
    current = couch.get_doc("_users", doc_id) or {}
    if logged_in and current.get(PLATFORM_MARK):
        return
    # Marked as the platform's: the purge removes the accounts of users whose data is gone.
    doc: JSON = {"_id": doc_id, "name": name, "type": "user", "roles": [], PLATFORM_MARK: True}
    if "_rev" in current:
        doc = {**current, PLATFORM_MARK: True} if logged_in else {**doc, "_rev": current["_rev"]}
        doc["roles"] = current.get("roles", [])
    if not logged_in:
        doc["password"] = password
    couch.request("PUT", doc_path("_users", doc_id), body=doc, ok=(201, 202))
    if logged_in:
        report.change("marked the application user as a platform account")
    else:
        report.change(
            "updated the application user's password" if current else "created the application user"
        )


def ensure_security(couch: Couch, settings: Settings, report: SetupReport) -> None:
    path = f"{db_path(settings.database)}/_security"
    wanted = desired_security(settings)
    if _normalise_security(couch.get(path)) != _normalise_security(wanted):
        couch.put(path, wanted)
        report.change(f"set _security of {settings.database}")


def cluster_setup(
    couch: Couch,
    settings: Settings,
    *,
    zones: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SetupReport:
    """Bring the cluster to the expected state. `zones` (node -> zone) sets the nodes' zones
    where nothing else does; in the platform each CouchDB pod sets its own (COUCHDB_ZONE).
    With a `[cluster] placement`, the zones are checked before any database is created."""
    report = SetupReport()
    nodes = wait_for_cluster(couch, settings, report, sleep=sleep, clock=clock)
    report.nodes = len(nodes)
    if zones:
        ensure_zones(couch, zones, nodes, report)
    placement = configured_placement(couch, nodes)
    placed: dict[str, str] = {}
    if placement is not None:
        if placement.total != settings.replicas:
            raise OpsError(
                f"[cluster] placement {placement} makes {placement.total} copies of each shard "
                f"range, COUCHDB_REPLICAS says {settings.replicas}"
            )
        placed = check_zones(couch, nodes, placement, report, sleep=sleep, clock=clock)
    finish_cluster(couch, nodes, report)
    ensure_system_databases(couch, report)
    partitioned = ensure_database(couch, settings, report)
    ensure_purged_infos_limit(couch, settings, report)
    ensure_indexes(couch, settings, partitioned, report)
    ensure_app_user(couch, settings, report)
    ensure_security(couch, settings, report)
    if placement is not None:
        report_misplaced_databases(couch, placement, placed, report)
    if report.changes:
        logger().info("cluster_setup.done", changes=len(report.changes), summary=report.changes)
    else:
        logger().info("cluster_setup.done", changes=0, summary="nothing to change")
    return report
