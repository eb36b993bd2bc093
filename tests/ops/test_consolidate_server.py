"""consolidate against a real server: legacy userdb-<hex> databases into one database."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from couchops.consolidate import consolidate
from couchops.couch import Couch, db_path, doc_path
from couchops.partition import partition_key, userdb_name
from tests.ops.conftest import Server
from tests.ops.helpers import (
    bulk,
    days_ago,
    every_copy,
    last_line,
    onboarding_doc,
    run_cli,
    with_attachment,
)

pytestmark = pytest.mark.server

SECRET = b"test-partition-secret"


def make_userdbs(
    couch: Couch, make_db: Callable[..., str], users: list[str], per_user: int = 3
) -> dict[str, str]:
    """Legacy databases named like couch_peruser's; answers {user: database}."""
    tag = make_db(create=False).rsplit("-", 1)[1]
    out = {}
    for short in users:
        user = f"{short}.{tag}@example.fr"
        name = userdb_name(user)
        couch.request("PUT", db_path(name), ok=(201,))
        docs = [onboarding_doc("profile", days_ago(2), owner="self")]
        docs += [onboarding_doc(f"application-{i}", days_ago(i)) for i in range(per_user - 1)]
        docs[0] = with_attachment(
            docs[0], "id-card.jpg", b"\xff\xd8" + user.encode() * 50, "image/jpeg"
        )
        docs.append({"_id": "_design/legacy", "views": {"v": {"map": "function(d){emit(d._id)}"}}})
        # Every copy confirms: a migration reading one copy must find what the test wrote.
        bulk(couch, name, docs, params=every_copy(couch, name))
        out[user] = name
    return out


@pytest.fixture
def userdbs(couch: Couch, make_db: Callable[..., str]) -> Callable[..., dict[str, str]]:
    created: list[str] = []

    def make(users: list[str], per_user: int = 3) -> dict[str, str]:
        result = make_userdbs(couch, make_db, users, per_user)
        created.extend(result.values())
        return result

    yield make  # type: ignore[misc]
    for name in created:
        couch.request("DELETE", db_path(name), ok=(200, 202, 404))


def _target(couch: Couch, make_db: Callable[..., str], server: Server) -> str:
    if server.kind == "couchdb":
        return make_db("couchops-target", partitioned=True)
    return make_db("couchops-target")


def test_consolidation_rewrites_ids_into_user_partitions_and_verifies_counts(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    userdbs: Callable[..., dict[str, str]],
) -> None:
    target = _target(couch, make_db, server)
    legacy = userdbs(["alice", "bob", "chloé"])
    stats = consolidate(couch, target, SECRET, concurrency=2, group_size=2, only=[*legacy.values()])

    assert stats.failures == []
    assert stats.sources_verified >= 3
    assert stats.design_documents_skipped >= 3
    for user, name in legacy.items():
        partition = partition_key(user, SECRET)
        assert user not in partition and name[7:] not in partition
        profile = couch.get(doc_path(target, f"{partition}:profile"), params={"attachments": True})
        source = couch.get(doc_path(name, "profile"), params={"attachments": True})
        assert profile["_rev"] == source["_rev"]
        assert (
            profile["_attachments"]["id-card.jpg"]["data"]
            == source["_attachments"]["id-card.jpg"]["data"]
        )
        rows = couch.get(
            f"{db_path(target)}/_all_docs",
            params={"startkey": f"{partition}:", "endkey": f"{partition}:\ufff0"},
        )["rows"]
        assert len(rows) == 3


def test_consolidation_is_idempotent_and_a_second_run_writes_nothing_new(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    userdbs: Callable[..., dict[str, str]],
) -> None:
    target = _target(couch, make_db, server)
    sources = [*userdbs(["dan", "eve"]).values()]
    consolidate(couch, target, SECRET, only=sources)
    before = couch.get(f"{db_path(target)}/_all_docs")["rows"]
    again = consolidate(couch, target, SECRET, only=sources)
    after = couch.get(f"{db_path(target)}/_all_docs")["rows"]
    assert again.failures == []
    assert after == before


def test_an_interrupted_run_is_finished_by_the_next_and_verified_sources_are_deleted(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    userdbs: Callable[..., dict[str, str]],
) -> None:
    target = _target(couch, make_db, server)
    legacy = userdbs([f"user{i}" for i in range(6)], per_user=2)
    ours = set(legacy.values())
    # Only the test's own sources: a run that deletes must never touch other userdb databases
    # of the server the suite is pointed at.
    only = sorted(ours)
    first = consolidate(
        couch, target, SECRET, limit=2, group_size=1, delete_sources=True, only=only
    )
    assert first.sources == 2
    remaining = [n for n in ours if couch.db_info(n) is not None]
    assert len(remaining) == 4
    consolidate(couch, target, SECRET, delete_sources=True, only=only)
    assert all(couch.db_info(n) is None for n in ours)
    assert couch.db_info(target)["doc_count"] == 6 * 2  # type: ignore[index]


def test_conflicting_revisions_of_a_source_are_carried_over(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    userdbs: Callable[..., dict[str, str]],
) -> None:
    target = _target(couch, make_db, server)
    ((user, name),) = userdbs(["frank"]).items()
    bulk(
        couch,
        name,
        [{"_id": "profile", "_rev": "1-aaaa", "createdAt": days_ago(1)}],
        new_edits=False,
    )
    consolidate(couch, target, SECRET, only=[name])
    new_id = f"{partition_key(user, SECRET)}:profile"
    doc = couch.get(doc_path(target, new_id), params={"conflicts": True})
    assert len(doc.get("_conflicts", [])) == 1


def test_cli_consolidate_needs_the_partition_secret_and_reports_bad_source_names(
    server: Server, couch: Couch, make_db: Callable[..., str], tmp_path: object
) -> None:
    target = _target(couch, make_db, server)
    env = server.env()
    env["COUCHDB_DATABASE"] = target
    missing = run_cli(["consolidate"], env)
    assert missing.returncode == 2
    assert "USER_PARTITION_SECRET" in last_line(missing.stderr)

    bad = make_db("userdb-zz-not-hex")
    env["USER_PARTITION_SECRET"] = "s3cret"
    done = run_cli(["consolidate", "--concurrency", "2"], env)
    assert done.returncode == 1
    assert bad in last_line(done.stderr)
    events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert any(e["event"] == "consolidate.invalid_source_name" for e in events)
