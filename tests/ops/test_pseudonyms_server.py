"""No personal data in anything couchops prints: every command, run on a legacy database named
after an e-mail address (``userdb-<hex of the e-mail>``, as CouchDB's couch_peruser names it),
success and failure alike, prints neither the address nor its hex."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from couchops.couch import Couch
from couchops.pseudonym import pseudonym
from tests.ops.helpers import bulk, days_ago, onboarding_doc, run_cli

pytestmark = pytest.mark.server

EMAIL = "jeanne.martin@exemple.fr"
OTHER = "paul.durand@exemple.fr"


def userdb(email: str) -> str:
    return "userdb-" + email.encode().hex()


def test_every_command_on_a_database_named_after_an_e_mail_prints_neither_it_nor_its_hex(
    server: object, couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    source, target = userdb(EMAIL), userdb(OTHER)
    for name in (source, target):
        couch.request("DELETE", f"/{name}", ok=(200, 202, 404))
    couch.request("PUT", f"/{source}", ok=(201, 202))
    now = datetime.now(UTC)
    bulk(
        couch,
        source,
        [
            onboarding_doc("profile", days_ago(2, now)),
            onboarding_doc("application", days_ago(40, now)),
        ],
    )
    consolidated = make_db()
    env = server.env()  # type: ignore[attr-defined]
    env.update(
        {
            "BACKUP_DIR": str(tmp_path),
            "COUCHDB_DATABASE": consolidated,
            "USER_PARTITION_SECRET": "a-test-key",
            "LOG_LEVEL": "DEBUG",
        }
    )
    runs = [
        ["backup", "--database", source],
        ["verify"],
        ["restore", "--from", "latest", "--database", f"{source}={target}"],
        ["restore", "--from", "latest", "--database", f"{source}={target}"],  # refused: not empty
        ["verify", "--live", "--database", f"{source}={target}"],
        ["audit", "--database", source],
        ["purge", "--dry-run", "--database", source],
        ["purge", "--database", source],
        ["consolidate", "--source", source],
        ["backup-expire"],
        ["audit", "--database", "userdb-" + "0" * 6],  # no such database: an error line
    ]
    printed = []
    outcomes = []
    try:
        for args in runs:
            done = run_cli(args, env)
            outcomes.append((args[0], done.returncode))
            printed.append(done.stdout + done.stderr)
    finally:
        for name in (source, target):
            couch.request("DELETE", f"/{name}", ok=(200, 202, 404))
    text = "\n".join(printed)
    secrets = [EMAIL, OTHER, EMAIL.encode().hex(), OTHER.encode().hex(), "jeanne", "durand"]
    assert [s for s in secrets if s in text.lower()] == []
    # The pseudonyms stand where the names were, so an operator can follow a database.
    assert pseudonym(source) in text and pseudonym(target) in text
    # Failures printed too (the second restore is refused, the last audit fails).
    assert ("restore", 1) in outcomes and outcomes[-1][1] != 0
    assert json.loads(printed[0].splitlines()[0])["operation"] == "backup"
