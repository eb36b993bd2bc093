"""Creation timestamps and the partition keys of the consolidated database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from couchops.partition import consolidated_id, partition_key, user_from_userdb, userdb_name
from couchops.timestamps import iso, parse_timestamp

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10-01T08:30:00Z", datetime(2026, 10, 1, 8, 30, tzinfo=UTC)),
        ("2026-10-01T08:30:00.123Z", datetime(2026, 10, 1, 8, 30, 0, 123000, tzinfo=UTC)),
        ("2026-10-01T10:30:00+02:00", datetime(2026, 10, 1, 8, 30, tzinfo=UTC)),
        ("2026-10-01T08:30:00.123456789Z", datetime(2026, 10, 1, 8, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_iso_8601_with_an_explicit_offset_is_valid(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "yesterday",
        "2026-10-01",
        "2026-10-01T08:30:00",
        "2026-13-01T00:00:00Z",
        "2026-10-01 08:30:00Z",
        1700000000,
        ["2026-10-01T08:30:00Z"],
        "2026-12-01T00:00:00Z",
    ],
)
def test_anything_else_is_not_a_valid_timestamp(value: object) -> None:
    assert parse_timestamp(value, NOW) is None


@settings(deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 28)))
def test_iso_round_trips_to_the_millisecond(moment: datetime) -> None:
    instant = moment.replace(tzinfo=UTC)
    parsed = parse_timestamp(iso(instant), NOW)
    assert parsed is not None and abs(parsed - instant) < timedelta(milliseconds=1)


@settings(deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_partition_keys_are_valid_pseudonyms_that_reveal_nothing(user: str) -> None:
    name = userdb_name(user)
    assert user_from_userdb(name) == user
    key = partition_key(user, b"secret")
    assert re.fullmatch(r"u[0-9a-f]{32}", key)
    hex_name = name[len("userdb-") :]
    if len(hex_name) >= 12:  # shorter strings may occur in any digest by chance
        assert hex_name not in key
    assert key == partition_key(user, b"secret") != partition_key(user, b"other secret")
    assert consolidated_id(key, "profile").split(":", 1) == [key, "profile"]


@pytest.mark.parametrize("name", ["userdb-", "userdb-zz", "userdb-abc", "userdb-ff", "other-6162"])
def test_names_that_are_not_a_userdb_of_a_utf8_user_are_refused(name: str) -> None:
    assert user_from_userdb(name) is None
