"""The command line (help, exit codes, one-line errors) and the metrics it pushes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from couchops.cli import main
from couchops.couch import doc_path, encode_params
from couchops.metrics import build_registry, exposition
from tests.ops.helpers import environ_without_couch, last_line, run_cli

SUBCOMMANDS = [
    "cluster-setup",
    "purge",
    "backup",
    "restore",
    "verify",
    "consolidate",
    "audit",
    "backup-expire",
    "whois",
]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--couchdb-url" in capsys.readouterr().out


def test_an_unreachable_server_ends_with_one_line_and_exit_code_3() -> None:
    env = environ_without_couch() | {
        "COUCHDB_URL": "http://127.0.0.1:9",
        "HTTP_RETRIES": "0",
        "PUSHGATEWAY_URL": "",
    }
    done = run_cli(["purge", "--dry-run"], env)
    assert done.returncode == 3
    assert last_line(done.stderr) == (
        "couchops purge: CouchDB at http://127.0.0.1:9 is unreachable (connection refused)"
    )


def test_restore_without_a_backup_dir_says_so() -> None:
    env = environ_without_couch() | {"PUSHGATEWAY_URL": ""}
    env.pop("BACKUP_DIR", None)
    done = run_cli(["restore", "--from", "latest"], env)
    assert done.returncode == 1
    assert "BACKUP_DIR is not set" in last_line(done.stderr)


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.received.append(("POST", self.path, body))
        self.send_response(200)
        self.end_headers()

    def do_PUT(self) -> None:
        self.received.append(("PUT", self.path, ""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    received: list[tuple[str, str, str]] = []
    handler = type("Handler", (_Gateway,), {"received": received})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()


def test_a_failed_run_pushes_with_pushadd_and_leaves_the_last_success_untouched(
    gateway: tuple[str, list[tuple[str, str, str]]],
) -> None:
    url, received = gateway
    env = environ_without_couch() | {
        "COUCHDB_URL": "http://127.0.0.1:9",
        "HTTP_RETRIES": "0",
        "PUSHGATEWAY_URL": url,
        "ENVIRONMENT": "preprod",
    }
    assert run_cli(["purge"], env).returncode == 3
    ((method, path, body),) = received
    assert method == "POST"
    assert path == "/metrics/job/couchops/environment/preprod/operation/purge"
    assert "couchops_run_success 0.0" in body
    assert "couchops_last_run_timestamp_seconds" in body
    assert "couchops_last_success_timestamp_seconds" not in body


def test_a_successful_run_reports_its_counts_under_the_documented_names() -> None:
    text = exposition(
        build_registry(
            "purge",
            success=True,
            duration_seconds=12.5,
            counts={"documents_purged": 42, "documents_invalid_timestamp": 3},
            now=1_800_000_000,
        )
    )
    for line in [
        "couchops_run_success 1.0",
        "couchops_run_duration_seconds 12.5",
        "couchops_last_success_timestamp_seconds 1.8e+09",
        "couchops_purge_documents_purged 42.0",
        "couchops_purge_documents_invalid_timestamp 3.0",
    ]:
        assert line in text
    backup = exposition(
        build_registry(
            "backup", success=True, duration_seconds=1, counts={"documents": 5, "bytes": 9}
        )
    )
    assert "couchops_backup_documents 5.0" in backup and "couchops_backup_bytes 9.0" in backup
    setup = exposition(
        build_registry("cluster-setup", success=True, duration_seconds=1, counts={"changes": 0})
    )
    assert "couchops_cluster_setup_changes 0.0" in setup


def test_an_unreachable_pushgateway_does_not_change_the_outcome() -> None:
    env = environ_without_couch() | {
        "COUCHDB_URL": "http://127.0.0.1:9",
        "HTTP_RETRIES": "0",
        "PUSHGATEWAY_URL": "http://127.0.0.1:9",
    }
    done = run_cli(["purge"], env)
    assert done.returncode == 3
    assert "metrics.push_failed" in done.stderr


def test_query_parameters_are_encoded_as_couchdb_reads_them() -> None:
    assert encode_params(
        {"startkey": "a", "keys": ["x"], "include_docs": True, "limit": 5, "skip": None}
    ) == {"startkey": '"a"', "keys": '["x"]', "include_docs": "true", "limit": "5"}
    assert encode_params({"since": "12-g1AAAA", "open_revs": "all"}) == {
        "since": "12-g1AAAA",
        "open_revs": "all",
    }
    assert encode_params({"since": 0, "open_revs": ["1-a"]}) == {
        "since": "0",
        "open_revs": '["1-a"]',
    }
    assert doc_path("a/b", "_design/x y") == "/a%2Fb/_design/x%20y"
    assert doc_path("db", "u1:profile/2") == "/db/u1%3Aprofile%2F2"


@pytest.mark.server
def test_a_backup_is_followed_by_an_audit_of_the_backups_pushed_apart_from_the_databases_one(
    gateway: tuple[str, list[tuple[str, str, str]]],
    server: object,
    couch: object,
    make_db: Callable[..., str],
    tmp_path: Path,
) -> None:
    """The backups are audited by the job that mounts them, each night; that audit keeps its
    own series (`scope="backups"`) so the databases' audit after the purge does not replace
    them."""
    url, received = gateway
    db = make_db()
    env = server.env() | {"PUSHGATEWAY_URL": url, "BACKUP_DIR": str(tmp_path)}  # type: ignore[attr-defined]
    done = run_cli(["backup", "--database", db], env)
    assert done.returncode == 0, done.stderr
    paths = [path for method, path, _ in received if method == "POST"]
    assert paths == [
        "/metrics/job/couchops/environment/test/operation/backup",
        "/metrics/job/couchops/environment/test/operation/audit/scope/backups",
    ]
    audit_body = received[1][2]
    assert "couchops_audit_backups 1.0" in audit_body
    assert "couchops_audit_databases 0.0" in audit_body
    assert "couchops_audit_findings 0.0" in audit_body


@pytest.mark.parametrize("days", ["0", "31", "-2"])
def test_an_audit_cutoff_outside_the_budget_is_refused_naming_it(days: str) -> None:
    env = environ_without_couch() | {"COUCHDB_URL": "http://127.0.0.1:9", "PUSHGATEWAY_URL": ""}
    done = run_cli(["audit", f"--older-than-days={days}"], env)
    assert done.returncode == 2
    assert last_line(done.stderr) == (
        f"couchops audit: bad setting --older-than-days={days}: the audit's cutoff is 1 to "
        "GDPR_MAX_AGE_DAYS=30 days"
    )
