"""Document creation timestamps: ISO-8601 with an explicit UTC offset, nothing else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

# Date, 'T', time (optional fraction), then 'Z' or a numeric offset: no naive local times,
# which would make the age of a document depend on the clock's zone. The same pattern runs in
# CouchDB (Mango `$regex`, Erlang re) to find malformed dates, so it uses ASCII classes only.
ISO_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_ISO = re.compile(ISO_PATTERN)
FUTURE_TOLERANCE = timedelta(hours=1)
"""Clock skew accepted; a later timestamp would shelter a document from the purge."""


def parse_timestamp(value: Any, now: datetime) -> datetime | None:
    """The instant a value names, or None when it is not a valid creation timestamp."""
    match = _ISO.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    text = value.replace("Z", "+00:00")
    fraction = match.group(4)  # ".123456789": Python reads at most microseconds
    if fraction and len(fraction) > 7:
        text = text.replace(fraction, fraction[:7])
    try:
        instant = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None
    if instant > now + FUTURE_TOLERANCE:
        return None
    return instant


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
