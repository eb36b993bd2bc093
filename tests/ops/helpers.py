"""Test data: onboarding documents with creation timestamps and attachments."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from couchops.couch import Couch, db_path, shard_copies
from couchops.timestamps import iso

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def days_ago(days: float, now: datetime = NOW) -> str:
    return iso(now - timedelta(days=days))


def onboarding_doc(doc_id: str, created: str | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": doc_id,
        "type": "application",
        "step": "identity",
        "journey": "private-individual",
        "answers": {"employment": "employed", "income_band": "B", "country": "FR"},
        **extra,
    }
    if created is not None:
        doc["createdAt"] = created
    return doc


def with_attachment(
    doc: dict[str, Any], name: str, data: bytes, content_type: str
) -> dict[str, Any]:
    doc = dict(doc)
    doc["_attachments"] = {
        **doc.get("_attachments", {}),
        name: {"content_type": content_type, "data": base64.b64encode(data).decode()},
    }
    return doc


def every_copy(couch: Couch, db: str) -> dict[str, int]:
    """Write parameters that make a write return once every copy of the database has it
    (`w=n`), on a cluster (empty elsewhere).

    For documents written or updated just before a purge reads them: on a CouchDB cluster a
    write returns once a quorum of copies (2 of 3) has it, and the copy that the purge's
    `stable` index reads use may not have the last revision yet, so the purge names an older
    one and the document stays. Production purges documents at least 30 days old."""
    n = shard_copies(couch.db_info(db) or {})
    return {"w": n} if n else {}


def bulk(
    couch: Couch,
    db: str,
    docs: list[dict[str, Any]],
    *,
    new_edits: bool = True,
    params: dict[str, Any] | None = None,
) -> list[Any]:
    answer: list[Any] = couch.post(
        f"{db_path(db)}/_bulk_docs", {"docs": docs, "new_edits": new_edits}, params=params
    )
    errors = [r for r in answer if isinstance(r, dict) and r.get("error")]
    assert not errors, errors
    return answer


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "couchops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def environ_without_couch() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("COUCHDB_", "PURGE_"))}
