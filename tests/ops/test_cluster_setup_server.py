"""cluster-setup against a real server: a second run changes nothing and says so."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import requests

from couchops.cluster_setup import cluster_setup
from couchops.couch import Couch, db_path
from couchops.settings import load_settings
from tests.ops.conftest import Server
from tests.ops.helpers import log_events, run_cli

pytestmark = pytest.mark.server


def test_cluster_setup_creates_everything_once_and_a_second_run_changes_nothing(
    server: Server, couch: Couch, make_db: Callable[..., str]
) -> None:
    name = make_db(create=False)
    app_user = f"app-{name[-10:]}"
    settings = load_settings(
        {
            "COUCHDB_URL": server.url,
            "COUCHDB_DATABASE": name,
            "COUCHDB_SHARDS": "2",
            "COUCHDB_REPLICAS": str(max(1, min(3, len(server.nodes)))),
            "COUCHDB_NODES": ",".join(server.nodes),
            "COUCHDB_APP_USER": app_user,
            "COUCHDB_APP_PASSWORD": "app-password",
            "COUCHDB_SETUP_TIMEOUT_SECONDS": "60",
        }
    )
    try:
        first = cluster_setup(couch, settings)
        assert any(c.startswith("created database") for c in first.changes)
        assert any("index" in c for c in first.changes)
        assert couch.db_info(name) is not None
        for system in ("_users", "_replicator"):
            assert couch.db_info(system) is not None
        names = {ix["name"] for ix in couch.get(f"{db_path(name)}/_index")["indexes"]}
        assert "by-createdAt" in names
        security = couch.get(f"{db_path(name)}/_security")
        assert security["members"]["names"] == [app_user]
        session = requests.get(
            f"{server.url}/_session",
            auth=(app_user, "app-password"),
            timeout=10,
            verify=server.ca_file or True,
        )
        assert session.json()["userCtx"]["name"] == app_user
        if server.kind == "couchdb":
            assert couch.db_info(name)["props"]["partitioned"] is True  # type: ignore[index]

        second = cluster_setup(couch, settings)
        assert second.changes == []
    finally:
        doc = couch.get_doc("_users", f"org.couchdb.user:{app_user}")
        if doc:
            couch.request(
                "DELETE", f"/_users/org.couchdb.user:{app_user}", params={"rev": doc["_rev"]}
            )


def test_cli_cluster_setup_says_nothing_to_change_on_a_second_run(
    server: Server, make_db: Callable[..., str]
) -> None:
    name = make_db(create=False)
    env = server.env() | {
        "COUCHDB_DATABASE": name,
        "COUCHDB_REPLICAS": str(max(1, min(3, len(server.nodes)))),
    }
    first = run_cli(["cluster-setup"], env)
    assert first.returncode == 0, first.stderr
    second = run_cli(["cluster-setup"], env)
    assert second.returncode == 0, second.stderr
    done = [e for e in log_events(second.stderr) if e["event"] == "cluster_setup.done"]
    assert done[0]["changes"] == 0 and done[0]["summary"] == "nothing to change"
    assert json.loads(second.stdout)["changes"] == 0


def test_cli_names_bad_credentials_in_one_line(server: Server) -> None:
    # A user of its own: CouchDB 3.5 locks an account for minutes after a few failed logins,
    # and a wrong password for the real admin would lock out the tests that follow.
    user = "couchops-test-nobody"
    env = server.env() | {"COUCHDB_ADMIN_USER": user, "COUCHDB_ADMIN_PASSWORD": "wrong"}
    done = run_cli(["cluster-setup"], env)
    assert done.returncode == 3
    assert f"refused the credentials of user '{user}'" in done.stderr.splitlines()[-1]
