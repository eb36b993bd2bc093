"""The age of personal data, as every copy judges it: database, backups, restored copies.

A document's data is as old as the timestamp of its winning revision
(``PURGE_TIMESTAMP_FIELD``); a document without a valid one is as old as the first time a purge
saw it (the purge's ledger, ``_local/couchops-purge-untimed``), and one no purge has seen yet
is taken as collected when the copy is made. Design documents hold no personal data.

One budget, ``GDPR_MAX_AGE_DAYS`` (30 at most), bounds every copy: the purge removes data older
than ``PURGE_RETENTION_DAYS``; a backup copies only data younger than the budget less its own
life (``BACKUP_RETENTION_DAYS``) and less the interval of the expiry job that deletes it
(``BACKUP_EXPIRY_INTERVAL_HOURS``), so that no datum in it outlives the budget; a restore
writes nothing the purge would remove.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from couchops.couch import JSON, Couch
from couchops.errors import SettingsError
from couchops.purge import LEDGER_ID
from couchops.timestamps import parse_timestamp


@dataclass(frozen=True)
class DataCutoff:
    """What a copy may hold: data collected at `cutoff` or later, judged as of `now`."""

    cutoff: datetime
    now: datetime
    timestamp_field: str = "createdAt"


def backup_data_window(
    max_age_days: int, retention_days: int, expiry_interval_hours: int
) -> timedelta:
    """How old the data a backup copies may be, so that it is gone from the backup before it
    is older than the budget."""
    window = timedelta(days=max_age_days - retention_days, hours=-expiry_interval_hours)
    if window <= timedelta(0):
        raise SettingsError(
            f"BACKUP_RETENTION_DAYS={retention_days}: backups kept {retention_days} days "
            f"(deleted up to {expiry_interval_hours} h later) would keep personal data longer "
            f"than GDPR_MAX_AGE_DAYS={max_age_days} days whatever they hold (allowed: a "
            f"retention that leaves room for data, below {max_age_days} days less the interval)"
        )
    return window


def first_seen_ledger(couch: Couch, db: str) -> dict[str, str]:
    """When the purge first saw each document without a valid timestamp."""
    ledger = couch.get_doc(db, LEDGER_ID) or {}
    first_seen = ledger.get("first_seen")
    return {str(k): str(v) for k, v in first_seen.items()} if isinstance(first_seen, dict) else {}


def collected_at(
    doc: JSON,
    timestamp_field: str,
    now: datetime,
    first_seen: Mapping[str, str],
    unseen: datetime | None = None,
) -> datetime | None:
    """When the document's personal data was collected, as the purge would judge it (None for
    a design document); `unseen` (default `now`) for an undated document that `first_seen`
    does not list."""
    doc_id = str(doc.get("_id", ""))
    if doc_id.startswith("_design/"):
        return None
    instant = parse_timestamp(doc.get(timestamp_field), now)
    if instant is not None:
        return instant
    return parse_timestamp(first_seen.get(doc_id), now) or unseen or now
