"""Prospects' accounts in `_users` go with their data (`couchops.accounts`), against a real
server; the purge itself needs `_purge` (Apache CouchDB)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from couchops.accounts import PLATFORM_MARK, USERS, account_id, purge_accounts
from couchops.couch import Couch, doc_path
from couchops.partition import userdb_name
from tests.ops.conftest import Server
from tests.ops.helpers import bulk, onboarding_doc

pytestmark = pytest.mark.server

KEPT_USER = "alice.kept@exemple.fr"  # her database still holds data
GONE_USER = "bob.gone@exemple.fr"  # migrated: his database was deleted
PLATFORM = "onboarding-web-test"  # the platform's own account, no user database


@pytest.fixture
def accounts(couch: Couch) -> Iterator[dict[str, str]]:
    couch.request("PUT", f"/{USERS}", ok=(201, 202, 412))
    users = {KEPT_USER: {}, GONE_USER: {}, PLATFORM: {PLATFORM_MARK: True}}
    for name, extra in users.items():
        doc = {"_id": account_id(name), "name": name, "type": "user", "roles": [], **extra}
        couch.request("PUT", doc_path(USERS, doc["_id"]), body={**doc, "password": "x"})
    kept_db = userdb_name(KEPT_USER)
    couch.request("PUT", f"/{kept_db}", ok=(201, 202, 412))
    bulk(couch, kept_db, [onboarding_doc("profile", "2026-11-30T10:00:00Z")])
    yield {name: account_id(name) for name in users}
    couch.request("DELETE", f"/{kept_db}", ok=(200, 202, 404))
    for name in users:
        current = couch.get_doc(USERS, account_id(name))
        if current:
            couch.request(
                "DELETE", doc_path(USERS, current["_id"]), params={"rev": current["_rev"]}
            )


def test_only_accounts_whose_data_is_gone_are_due_and_platform_accounts_never(
    couch: Couch, accounts: dict[str, str]
) -> None:
    stats, due = purge_accounts(couch, dry_run=True)
    assert accounts[GONE_USER] in due
    assert accounts[KEPT_USER] not in due and accounts[PLATFORM] not in due
    assert stats.accounts_purged == 0
    assert couch.get_doc(USERS, accounts[GONE_USER]) is not None  # a dry run changes nothing


def test_the_purge_removes_the_account_of_a_user_whose_data_is_gone_for_good(
    server: Server, couch: Couch, accounts: dict[str, str]
) -> None:
    server.require("purge")
    stats, _ = purge_accounts(couch)
    assert stats.accounts_purged >= 1
    gone = accounts[GONE_USER]
    assert couch.get_doc(USERS, gone) is None
    revs = couch.request(
        "GET",
        doc_path(USERS, gone),
        params={"open_revs": "all"},
        headers={"Accept": "application/json"},
        ok=(200, 404),
    )
    assert revs.status_code == 404 or all("missing" in item for item in revs.json())
    assert couch.get_doc(USERS, accounts[KEPT_USER]) is not None
    assert couch.get_doc(USERS, accounts[PLATFORM]) is not None
