"""Database names as logs, metrics and error lines may show them.

A legacy database is named ``userdb-<hex of the user name>`` (CouchDB's ``couch_peruser``),
and the user name is an e-mail address: the name is personal data, readable by anyone who
reads the logs. So every database name couchops prints is replaced by a pseudonym,
``db~<12 hex>`` (SHA-256 of the name), except the names that carry nothing personal: system
databases (``_users``, ``_replicator``...) and the ones the platform names itself (the
consolidated database). The pseudonym is stable: an operator finds the database behind one
with ``couchops whois``, which hashes the server's own list.

The replacement is made where text leaves the process (the log renderer, the final error
line, the dry-run listing), not at each call site, so no message, exception or URL path can
carry a name past it: every name couchops sends a request for passes through
:func:`couchops.couch.db_path`, which records it here.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote

PREFIX = "db~"
_LEGACY = re.compile(r"userdb-[0-9a-fA-F]+")
# What a database name (or its escaped form in a URL path) is made of; '/' excluded, since it
# also separates the parts of a path (names holding one are replaced as whole strings).
_TOKEN = re.compile(r"[A-Za-z0-9_$()+%-]+")
_ESCAPED_SLASH = re.compile(r"(%2[Ff])")

_lock = threading.Lock()
_clear: set[str] = set()
_known: dict[str, str] = {}
"""Name, or its escaped form, -> pseudonym, for every name met by this process."""
_slashed: dict[str, str] = {}
"""The names holding a '/', replaced as whole strings (tokens never hold one)."""


def pseudonym(name: str) -> str:
    return PREFIX + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


def keep_clear(names: Iterable[str]) -> None:
    """Names the platform gives its own databases: shown as they are."""
    with _lock:
        _clear.update(names)


def is_clear(name: str) -> bool:
    return name.startswith("_") or name in _clear


def label(name: str) -> str:
    """How a database is named in anything couchops prints; records the name."""
    if is_clear(name):
        return name
    remember(name)
    return pseudonym(name)


def remember(name: str) -> None:
    if is_clear(name) or name in _known:
        return
    alias = pseudonym(name)
    with _lock:
        for form in {name, quote(name, safe=""), quote(name, safe="/")}:
            _known[form] = alias
            if "/" in form:
                _slashed[form] = alias


def _part(part: str) -> str:
    alias = _known.get(part)
    if alias is not None:
        return alias
    return _LEGACY.sub(lambda m: pseudonym(m.group(0)), part)


def _token(match: re.Match[str]) -> str:
    # An escaped '/' separates the parts of a node-local shard path (shards%2F<range>%2F<db>).
    return "".join(_part(part) for part in _ESCAPED_SLASH.split(match.group(0)))


def scrub(text: str) -> str:
    """The text with every database name it holds replaced by its pseudonym (and any
    ``userdb-<hex>``, recorded or not)."""
    for form, alias in _slashed.items():
        text = text.replace(form, alias)
    return _TOKEN.sub(_token, text)


def scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: scrub_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(item) for item in value]
    return value


def scrub_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: the last step before rendering, after exceptions are formatted."""
    return {key: scrub_value(value) for key, value in event.items()}


def whois(alias: str, names: Iterable[str]) -> str | None:
    """The database among `names` whose pseudonym is `alias`."""
    return next((name for name in names if pseudonym(name) == alias), None)
