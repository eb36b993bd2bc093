"""consolidate --delete-sources against a real server: a source goes only when the target holds
every leaf of every document it holds at deletion time, and it did not change after its read.

Writes that race the run are made at fixed points of it, by wrapping the module's own steps:
after the copy's write (`_write`), and after the last read of the source's documents
(`_leaves_now`), just before the last check of its info.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from couchops import consolidate as consolidation
from couchops.consolidate import consolidate
from couchops.couch import Couch, db_path, doc_path
from couchops.partition import partition_key
from couchops.pseudonym import pseudonym
from tests.ops.conftest import Server
from tests.ops.helpers import bulk, days_ago, every_copy, last_line, onboarding_doc, run_cli
from tests.ops.test_consolidate_server import SECRET, make_userdbs

pytestmark = pytest.mark.server


@pytest.fixture
def source(couch: Couch, make_db: Callable[..., str]) -> Iterator[tuple[str, str]]:
    """One legacy database of three documents (one with an attachment) plus a design
    document, whose `profile` has a conflicting leaf; answers (user, database). Every copy
    has them all (`w=n`)."""
    ((user, name),) = make_userdbs(couch, make_db, ["gina"]).items()
    bulk(
        couch,
        name,
        [{"_id": "profile", "_rev": "1-aaaa", "createdAt": days_ago(1)}],
        new_edits=False,
        params=every_copy(couch, name),
    )
    yield user, name
    couch.request("DELETE", db_path(name), ok=(200, 202, 404))


@pytest.fixture
def target(server: Server, make_db: Callable[..., str]) -> str:
    if server.kind == "couchdb":
        return make_db("couchops-target", partitioned=True)
    return make_db("couchops-target")


def leaves(couch: Couch, db: str, doc_id: str) -> set[str]:
    """Every live leaf revision of a document, read with `open_revs=all`."""
    answer = couch.get(doc_path(db, doc_id), params={"open_revs": "all"})
    return {i["ok"]["_rev"] for i in answer if "ok" in i and not i["ok"].get("_deleted")}


def put_everywhere(couch: Couch, db: str, doc: dict[str, Any]) -> None:
    """Update a document, every copy confirming (`w=n`): the run's next read, whichever copy
    answers it, sees the write (one only a quorum holds is the race the README admits)."""
    couch.request("PUT", doc_path(db, doc["_id"]), body=doc, params=every_copy(couch, db))


def delete_everywhere(couch: Couch, db: str, doc: dict[str, Any]) -> None:
    """Delete a document, every copy confirming (`w=n`)."""
    params = {"rev": doc["_rev"], **every_copy(couch, db)}
    couch.request("DELETE", doc_path(db, doc["_id"]), params=params)


def after(
    monkeypatch: pytest.MonkeyPatch, step: str, action: Callable[[], object], times: int = 1
) -> None:
    """Run `action` right after the module's `step` returns, its first `times` calls."""
    original = getattr(consolidation, step)
    calls = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls.append(step)
        if len(calls) <= times:
            action()
        return result

    monkeypatch.setattr(consolidation, step, wrapped)


def run(couch: Couch, target: str, name: str) -> consolidation.ConsolidateStats:
    """A deleting run over `name` only; what the target lacks is waited for 1 s, not 30."""
    return consolidate(couch, target, SECRET, delete_sources=True, only=[name], verify_timeout=1.0)


def test_a_clean_run_deletes_the_source_once_the_target_holds_every_leaf(
    couch: Couch, target: str, source: tuple[str, str]
) -> None:
    user, name = source
    before = leaves(couch, name, "profile")
    assert len(before) == 2  # the winner and the conflicting leaf

    stats = run(couch, target, name)

    assert stats.failures == []
    assert (stats.sources_deleted, stats.sources_verified, stats.sources_changed) == (1, 1, 0)
    assert couch.db_info(name) is None
    assert leaves(couch, target, f"{partition_key(user, SECRET)}:profile") == before


def test_a_write_to_the_source_after_its_copy_keeps_it_and_the_next_run_deletes_it(
    couch: Couch, target: str, source: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, name = source
    late = onboarding_doc("late", days_ago(0))
    after(monkeypatch, "_write", lambda: bulk(couch, name, [late], params=every_copy(couch, name)))

    stats = run(couch, target, name)

    assert couch.db_info(name) is not None
    assert (stats.sources_deleted, stats.sources_failed, stats.sources_changed) == (0, 1, 1)
    assert stats.failures[0].startswith(f"{name}: written to after it was read (doc_count ")
    monkeypatch.undo()
    again = run(couch, target, name)
    assert again.failures == [] and again.sources_deleted == 1
    assert couch.get_doc(target, f"{partition_key(user, SECRET)}:late") is not None


def test_a_new_revision_after_the_last_read_of_the_documents_is_caught_by_update_seq(
    couch: Couch, target: str, source: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write lands after every document check passed: only the source's info, read again
    just before the deletion, can see it (same doc_count, a later update_seq)."""
    _, name = source

    def update() -> None:
        doc = couch.get_doc(name, "application-0")
        assert doc is not None
        put_everywhere(couch, name, {**doc, "step": "signed"})

    after(monkeypatch, "_leaves_now", update)

    stats = run(couch, target, name)

    assert couch.db_info(name) is not None
    assert (stats.sources_deleted, stats.sources_changed) == (0, 1)
    assert stats.failures[0].startswith(
        f"{name}: written to after it was read (its changes feed lists writes since update_seq "
    )


def test_a_document_deleted_in_the_target_after_the_copy_keeps_the_source_on_every_run(
    couch: Couch, target: str, source: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying again cannot undo a deletion in the target (the revision is there, under a
    tombstone): the source stays until someone decides."""
    user, name = source
    new_id = f"{partition_key(user, SECRET)}:application-0"

    def delete_in_target() -> None:
        doc = couch.get_doc(target, new_id)
        assert doc is not None
        delete_everywhere(couch, target, doc)

    after(monkeypatch, "_write", delete_in_target)

    stats = run(couch, target, name)

    assert couch.db_info(name) is not None
    assert (stats.sources_deleted, stats.sources_failed, stats.sources_changed) == (0, 1, 0)
    assert f"of {new_id} is deleted in the target" in stats.failures[0]
    monkeypatch.undo()
    again = run(couch, target, name)
    assert again.sources_deleted == 0 and "is deleted in the target" in again.failures[0]
    assert couch.db_info(name) is not None


def test_a_conflicting_leaf_the_copy_did_not_carry_keeps_the_source(
    couch: Couch, target: str, source: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, name = source
    (conflict,) = couch.get(doc_path(name, "profile"), params={"conflicts": True})["_conflicts"]
    monkeypatch.setattr(consolidation, "_conflict_leaves", lambda *args: [])

    stats = run(couch, target, name)

    assert couch.db_info(name) is not None
    assert (stats.sources_deleted, stats.sources_failed) == (0, 1)
    new_id = f"{partition_key(user, SECRET)}:profile"
    assert f"revision {conflict} of {new_id} is not in the target" in stats.failures[0]


def test_a_document_the_copy_read_missed_keeps_the_source(
    couch: Couch, target: str, source: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the shard copy the migration read lags behind the others: the source's
    documents are read again, through the clustered database, before it is deleted."""
    user, name = source
    original = consolidation._rows

    def lagging_copy(couch: Couch, path: str, *, attachments: bool = True) -> Iterator[Any]:
        for row in original(couch, path, attachments=attachments):
            if not (attachments and row["id"] == "application-0"):
                yield row

    monkeypatch.setattr(consolidation, "_rows", lagging_copy)

    stats = run(couch, target, name)

    assert couch.db_info(name) is not None
    assert (stats.sources_deleted, stats.sources_failed, stats.sources_changed) == (0, 1, 0)
    new_id = f"{partition_key(user, SECRET)}:application-0"
    assert f"(first: {new_id} is not in the target)" in stats.failures[0]


def test_a_document_updated_in_the_target_since_the_copy_is_held(
    couch: Couch, target: str, source: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application's newer revision descends from the one copied: nothing of the source's
    is lost by deleting it."""
    user, name = source
    new_id = f"{partition_key(user, SECRET)}:application-0"

    def update_in_target() -> None:
        doc = couch.get_doc(target, new_id)
        assert doc is not None
        put_everywhere(couch, target, {**doc, "step": "signed"})

    after(monkeypatch, "_write", update_in_target)

    stats = run(couch, target, name)

    assert stats.failures == [] and stats.sources_deleted == 1
    assert couch.db_info(name) is None


@pytest.mark.slow
def test_cli_keeps_a_source_the_target_no_longer_holds_and_exits_1_naming_it(
    server: Server, couch: Couch, target: str, source: tuple[str, str]
) -> None:
    """Slow: the run waits its 30 s for the deleted document before it gives up."""
    user, name = source
    consolidate(couch, target, SECRET, only=[name])
    new_id = f"{partition_key(user, SECRET)}:application-0"
    doc = couch.get_doc(target, new_id)
    assert doc is not None
    delete_everywhere(couch, target, doc)
    env = {**server.env(), "COUCHDB_DATABASE": target, "USER_PARTITION_SECRET": SECRET.decode()}

    done = run_cli(["consolidate", "--delete-sources", "--source", name], env)

    assert done.returncode == 1
    assert f"{pseudonym(name)}: " in last_line(done.stderr)
    assert "is deleted in the target" in last_line(done.stderr)
    assert name not in done.stderr
    assert couch.db_info(name) is not None
