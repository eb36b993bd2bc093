"""`cluster-setup`: bring a CouchDB cluster to the state the platform expects, idempotently.

Safe on every deploy: each step reads the current state first and writes only what differs,
and the run ends by saying how many changes it made ("nothing to change" on a second run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from couchops.accounts import PLATFORM_MARK, account_id
from couchops.couch import JSON, Couch, db_path, doc_path
from couchops.errors import CouchError, OpsError
from couchops.log import logger
from couchops.purge import index_fields, purge_index_specs
from couchops.settings import Settings

SYSTEM_DATABASES = ("_users", "_replicator")
AGREEING_READS = 3
"""Consecutive identical `_membership` answers required: each read may land on another node."""


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
            couch.url + "/_session", auth=(name, password), timeout=couch.timeout
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
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SetupReport:
    report = SetupReport()
    nodes = wait_for_cluster(couch, settings, report, sleep=sleep, clock=clock)
    report.nodes = len(nodes)
    finish_cluster(couch, nodes, report)
    ensure_system_databases(couch, report)
    partitioned = ensure_database(couch, settings, report)
    ensure_purged_infos_limit(couch, settings, report)
    ensure_indexes(couch, settings, partitioned, report)
    ensure_app_user(couch, settings, report)
    ensure_security(couch, settings, report)
    if report.changes:
        logger().info("cluster_setup.done", changes=len(report.changes), summary=report.changes)
    else:
        logger().info("cluster_setup.done", changes=0, summary="nothing to change")
    return report
