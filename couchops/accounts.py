"""Prospects' CouchDB accounts in ``_users``: removed with the user's data.

The legacy design gave every prospect a CouchDB account, ``_users/org.couchdb.user:<name>``,
whose name is their e-mail address, and a database ``userdb-<hex of the name>``. The account
holds personal data (the address, a password hash) and has no date: it goes with the data.

The rule: an account is purged (every revision, nothing left to read) once its user's
database is gone or holds no document any more, that is once the user's data was migrated
and the source deleted (``consolidate --delete-sources``, which purges the account at once),
or purged by the retention. Platform accounts are never touched: the ones ``cluster-setup``
creates carry ``PLATFORM_MARK``. The daily purge applies the rule after the databases.

Other system databases: ``_replicator`` holds replication jobs, whose documents may name a
legacy database (personal) in their source or target: a job document that names a
``userdb-`` database that no longer exists goes by the same rule. ``_global_changes`` is not
created by this platform (``cluster-setup`` creates ``_users`` and ``_replicator`` only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from couchops.couch import JSON, Couch, shard_copies
from couchops.partition import USERDB_PREFIX, userdb_name
from couchops.purge import leaves, purge_request

USERS = "_users"
REPLICATOR = "_replicator"
ACCOUNT_PREFIX = "org.couchdb.user:"
PLATFORM_MARK = "onboardingPlatformAccount"
"""A field `cluster-setup` sets on the accounts the platform itself uses."""


@dataclass
class AccountStats:
    accounts_purged: int = 0
    replication_jobs_purged: int = 0


def account_id(user: str) -> str:
    return ACCOUNT_PREFIX + user


def _rows(couch: Couch, db: str, start: str, end: str) -> Iterator[JSON]:
    params = {"startkey": start, "endkey": end, "include_docs": True}
    for row in couch.get(f"/{db}/_all_docs", params=params).get("rows", []):
        if isinstance(row.get("doc"), dict):
            yield row["doc"]


def _data_gone(couch: Couch, db: str) -> bool:
    info = couch.db_info(db)
    return info is None or not int(info.get("doc_count") or 0)


def purge_documents(couch: Couch, db: str, doc_ids: list[str]) -> int:
    """Purge every leaf of these documents; answers how many were purged."""
    if not doc_ids:
        return 0
    info = couch.db_info(db) or {}
    copies = shard_copies(info)
    purged = 0
    found = leaves(couch, db, doc_ids)
    for start in range(0, len(doc_ids), 100):
        body = {i: found[i] for i in doc_ids[start : start + 100] if found.get(i)}
        if body:
            purged += purge_request(couch, db, body, copies=copies)[0]
    return purged


def accounts_without_data(couch: Couch) -> list[str]:
    """The prospects' accounts whose database is gone or empty (platform accounts kept)."""
    if couch.db_info(USERS) is None:
        return []
    due = []
    for doc in _rows(couch, USERS, ACCOUNT_PREFIX, ACCOUNT_PREFIX + "\ufff0"):
        if doc.get(PLATFORM_MARK) or doc.get("type") != "user":
            continue
        if _data_gone(couch, userdb_name(str(doc.get("name", "")))):
            due.append(str(doc["_id"]))
    return due


def jobs_without_data(couch: Couch) -> list[str]:
    """Replication jobs naming a legacy database that no longer exists."""
    if couch.db_info(REPLICATOR) is None:
        return []
    due = []
    for doc in _rows(couch, REPLICATOR, "", "_design"):
        for side in ("source", "target"):
            url = doc.get(side)
            url = url.get("url") if isinstance(url, dict) else url
            name = str(url or "").rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(USERDB_PREFIX) and couch.db_info(name) is None:
                due.append(str(doc["_id"]))
                break
    return due


def purge_accounts(couch: Couch, *, dry_run: bool = False) -> tuple[AccountStats, list[str]]:
    """Apply the rule to `_users` and `_replicator`; answers the counts and the ids due (the
    ids of accounts hold the user name: they are for a dry run's listing, never logged)."""
    accounts, jobs = accounts_without_data(couch), jobs_without_data(couch)
    stats = AccountStats()
    if not dry_run:
        stats.accounts_purged = purge_documents(couch, USERS, accounts)
        stats.replication_jobs_purged = purge_documents(couch, REPLICATOR, jobs)
    return stats, accounts + jobs
