"""Legacy per-user database names and the partition keys of the consolidated database.

A legacy database is ``userdb-<hex of the UTF-8 user name>`` (CouchDB's ``couch_peruser``).
The user name is personal data (often an e-mail address) and its hex is trivially reversible,
so neither may appear in a document id. The partition key is a keyed pseudonym instead:

    partition = "u" + hex(HMAC-SHA256(USER_PARTITION_SECRET, utf8(user name)))[:32]

33 characters of ``[0-9a-f]`` after a leading ``u``: a valid CouchDB partition name (it never
starts with ``_`` and has no ``:``), 128 bits (collisions negligible for any number of users),
and irreversible without the secret. The web application computes the same function to find a
user's partition; the secret lives only in Kubernetes Secrets, never in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re

USERDB_PREFIX = "userdb-"
_HEX = re.compile(r"^(?:[0-9a-f]{2})+$")


def user_from_userdb(db_name: str) -> str | None:
    """The user name a legacy database belongs to, or None when the name is not one."""
    if not db_name.startswith(USERDB_PREFIX):
        return None
    encoded = db_name[len(USERDB_PREFIX) :]
    if not _HEX.match(encoded):
        return None
    try:
        return bytes.fromhex(encoded).decode("utf-8")
    except UnicodeDecodeError:
        return None


def userdb_name(user: str) -> str:
    return USERDB_PREFIX + user.encode("utf-8").hex()


def partition_key(user: str, secret: bytes) -> str:
    digest = hmac.new(secret, user.encode("utf-8"), hashlib.sha256).hexdigest()
    return "u" + digest[:32]


def consolidated_id(partition: str, doc_id: str) -> str:
    return f"{partition}:{doc_id}"
