"""What the Internet may reach of one environment, from its settings, and the check of a
computed reachable set against it (tests/unit/edge_reach.py computes the set)."""

from __future__ import annotations

from infra.settings import Settings
from tests.unit.edge_reach import Reach, path_covers

# CouchDB's ports (HTTP, HTTPS, epmd, Erlang distribution, metrics): never from outside.
COUCHDB_PORTS = frozenset({5984, 6984, 4369, 9100, 17986})


def expected_reach(settings: Settings) -> set[Reach]:
    """Exactly: the host's public path prefixes, through the Gateway's HTTPS listener, to the
    site's public port."""
    return {
        Reach(
            entry=f"Gateway {settings.namespace}/onboarding https",
            host=settings.ingress.host,
            path=f"PathPrefix {path}",
            workload=f"{settings.namespace}/webapp",
            container_port=settings.webapp.port,
            port_name="http",
        )
        for path in settings.ingress.public_paths
    }


def problems(reach: set[Reach], settings: Settings) -> list[str]:
    """Every way the reachable set departs from the expected one; empty when it is exact."""
    found = []
    management = (settings.webapp.metrics_path, settings.webapp.health_path)
    for item in sorted(reach):
        if item.container_port == settings.webapp.management_port:
            found.append(f"the management port is reachable: {item}")
        if item.container_port in COUCHDB_PORTS or "couchdb" in item.workload:
            found.append(f"CouchDB is reachable: {item}")
        if item.workload.split("/", 1)[1].startswith("couchops"):
            found.append(f"an ops job is reachable: {item}")
        if item.path is not None:
            value = item.path.partition(" ")[2].rstrip("/")
            # "/" covers every path of the public port, which serves no management path; any
            # narrower match on or inside a management path routes it on purpose.
            for path in management:
                if value and (
                    path_covers(item.path, path)
                    or value == path.rstrip("/")
                    or value.startswith(path.rstrip("/") + "/")
                ):
                    found.append(f"a management path ({path}) is routed: {item}")
    expected = expected_reach(settings)
    for item in sorted(reach - expected):
        found.append(f"reachable but not expected: {item}")
    for item in sorted(expected - reach):
        found.append(f"expected but not reachable: {item}")
    return found
