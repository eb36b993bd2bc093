"""scripts/ci/post_preview.py against a stand-in of each forge's API on loopback: the first run
adds the note, the next ones update it (found by its marker); the token goes in the header each
forge expects; outside a merge or pull request nothing is posted; a missing token fails."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts" / "ci"))
import post_preview  # noqa: E402

LOG = """Previewing update (preprod):
    + 68 to create
Resources:
    + 68 to create

Policy Packs run:
    Name                                Version
    onboarding-platform|local|policies  0.0.1
"""
BROKEN = """Previewing update (prod):
Policies:
    ❌ onboarding-platform@v0.0.1 (local: policies)
        - [mandatory]  couchdb-service-internal-only  (kubernetes:core/v1:Service: couchdb)
          Service onboarding-prod/couchdb selects CouchDB pods and is reachable from outside
error: preview failed
"""


class Forge(BaseHTTPRequestHandler):
    """Keeps the notes (comments) in memory, as GitLab or GitHub would."""

    notes: ClassVar[list[dict[str, Any]]] = []
    requests: ClassVar[list[tuple[str, str, dict[str, str], Any]]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body: Any = json.loads(self.rfile.read(length)) if length else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        type(self).requests.append((self.command, self.path, headers, body))
        path = self.path.split("?")[0]
        if self.command == "GET":
            reply: Any = self.notes
        elif self.command == "POST":
            reply = {"id": 100 + len(self.notes), "body": body["body"]}
            self.notes.append(reply)
        else:
            note_id = int(path.rsplit("/", 1)[1])
            (reply,) = [n for n in self.notes if n["id"] == note_id]
            reply["body"] = body["body"]
        data = json.dumps(reply).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = _handle


@pytest.fixture
def forge() -> Iterator[str]:
    Forge.notes = [{"id": 7, "body": "LGTM", "system": False}]
    Forge.requests = []
    server = HTTPServer(("127.0.0.1", 0), Forge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.fixture
def logs(tmp_path: Path) -> list[str]:
    (tmp_path / "preview-preprod.log").write_text(LOG)
    (tmp_path / "preview-prod.log").write_text(BROKEN)
    return [str(tmp_path / "preview-prod.log"), str(tmp_path / "preview-preprod.log")]


def test_gitlab_adds_the_note_once_then_updates_it(forge: str, logs: list[str]) -> None:
    env = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{forge}/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "9",
        "CI_COMMIT_SHORT_SHA": "abc1234",
        "GITLAB_PREVIEW_NOTE_TOKEN": "glpat-test",
    }
    assert post_preview.main(logs, env) == 0
    assert post_preview.main(logs, env) == 0
    methods = [(m, p.split("?")[0]) for m, p, _, _ in Forge.requests]
    notes = "/api/v4/projects/42/merge_requests/9/notes"
    assert methods == [("GET", notes), ("POST", notes), ("GET", notes), ("PUT", f"{notes}/101")]
    assert all(h.get("private-token") == "glpat-test" for _, _, h, _ in Forge.requests)
    assert len(Forge.notes) == 2  # the reviewer's note and ours, updated in place
    body = Forge.notes[1]["body"]
    assert body.startswith(post_preview.MARKER) and "`abc1234`" in body
    assert "### prod: policy violations: 1" in body
    assert "[mandatory]  couchdb-service-internal-only" in body
    assert "### preprod: policies passed" in body and "+ 68 to create" in body


def test_github_comments_on_the_pull_request(forge: str, logs: list[str], tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 5}}))
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": forge,
        "GITHUB_REPOSITORY": "bank/onboarding",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_TOKEN": "ghs_test",
        "GITHUB_SHA": "0123456789abcdef",
    }
    assert post_preview.main(logs, env) == 0
    assert post_preview.main(logs, env) == 0
    methods = [(m, p.split("?")[0]) for m, p, _, _ in Forge.requests]
    comments = "/repos/bank/onboarding/issues/5/comments"
    assert methods == [
        ("GET", comments),
        ("POST", comments),
        ("GET", comments),
        ("PATCH", "/repos/bank/onboarding/issues/comments/101"),
    ]
    assert all(h.get("authorization") == "Bearer ghs_test" for _, _, h, _ in Forge.requests)
    assert "`01234567`" in Forge.notes[1]["body"]


def test_outside_a_merge_request_nothing_is_posted(
    forge: str, logs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"GITLAB_CI": "true", "CI_API_V4_URL": f"{forge}/api/v4", "CI_PROJECT_ID": "42"}
    assert post_preview.main(logs, env) == 0
    assert Forge.requests == []
    assert "not a merge request pipeline" in capsys.readouterr().err


def test_a_merge_request_without_the_token_fails_naming_it(
    forge: str, logs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{forge}/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "9",
    }
    assert post_preview.main(logs, env) == 2
    assert "GITLAB_PREVIEW_NOTE_TOKEN" in capsys.readouterr().err
    assert Forge.requests == []
