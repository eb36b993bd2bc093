"""Document creation timestamps: ISO-8601 with an explicit UTC offset, nothing else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

# Date, 'T', time (optional fraction), then 'Z' or a numeric offset: no naive local times,
# which would make the age of a document depend on the clock's zone.
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
FUTURE_TOLERANCE = timedelta(hours=1)
"""Clock skew accepted; a later timestamp would shelter a document from the purge."""


def parse_timestamp(value: Any, now: datetime) -> datetime | None:
    """The instant a value names, or None when it is not a valid creation timestamp."""
    if not isinstance(value, str) or not _ISO.match(value):
        return None
    text = value.replace("Z", "+00:00")
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        instant = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None
    if instant > now + FUTURE_TOLERANCE:
        return None
    return instant


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
