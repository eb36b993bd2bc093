"""components/backups.py: nightly, expired hourly within the GDPR budget, verified weekly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from couchops.couch import parse_node_urls
from infra.schedules import longest_gap, run_times
from tests.unit.harness import Recorded, one


def container_of(cron: Recorded) -> dict[str, Any]:
    container: dict[str, Any] = cron.spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def env_of(cron: Recorded) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container_of(cron)["env"]}


def backup_mount(cron: Recorded) -> dict[str, Any]:
    return next(m for m in container_of(cron)["volumeMounts"] if m["name"] == "backups")


def claim_of(cron: Recorded) -> str:
    volumes = cron.spec["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    return str(
        next(v for v in volumes if v["name"] == "backups")["persistentVolumeClaim"]["claimName"]
    )


def test_backups_get_the_retention_and_budget_the_settings_computed(stack: list[Recorded]) -> None:
    # Both stacks: 7 days of backups, expired at most an hour late, within 30 days.
    for name in ("couchops-backup", "couchops-backup-expire"):
        env = env_of(one(stack, "CronJob", name))
        assert env["BACKUP_RETENTION_DAYS"] == "7", name
        assert env["BACKUP_EXPIRY_INTERVAL_HOURS"] == "1", name
        assert env["GDPR_MAX_AGE_DAYS"] == "30", name
        assert env["BACKUP_DIR"] == "/backups", name
    claim = one(stack, "PersistentVolumeClaim", "couchdb-backups")
    assert claim.spec["resources"]["requests"]["storage"]


def test_backups_expire_every_hour_in_paris_even_without_a_backup_run(
    stack: list[Recorded],
) -> None:
    expire = one(stack, "CronJob", "couchops-backup-expire")
    assert (expire.spec["schedule"], expire.spec["timeZone"]) == ("7 * * * *", "Europe/Paris")
    assert container_of(expire)["args"] == ["backup-expire"]
    assert expire.spec["concurrencyPolicy"] == "Forbid"
    assert expire.spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 15 * 60
    # It deletes backups: the same volume as the backup, written to.
    assert (
        claim_of(expire) == claim_of(one(stack, "CronJob", "couchops-backup")) == "couchdb-backups"
    )
    assert backup_mount(expire)["mountPath"] == "/backups"
    assert not backup_mount(expire).get("readOnly", False)
    # The interval the job is told is the longest its own schedule leaves, clock changes
    # included (infra/schedules.py, checked against robfig/cron).
    gap = longest_gap(expire.spec["schedule"], expire.spec["timeZone"])
    assert gap.length == timedelta(hours=int(env_of(expire)["BACKUP_EXPIRY_INTERVAL_HOURS"]))


def test_the_backup_writes_and_the_drill_only_reads_the_volume(stack: list[Recorded]) -> None:
    backup = one(stack, "CronJob", "couchops-backup")
    verify = one(stack, "CronJob", "couchops-backup-verify")
    assert container_of(backup)["args"] == ["backup"]
    assert container_of(verify)["args"] == ["verify"]
    assert not backup_mount(backup).get("readOnly", False)
    assert backup_mount(verify)["readOnly"] is True


def test_verify_drill_never_runs_while_a_backup_may_hold_the_volume(stack: list[Recorded]) -> None:
    backup = one(stack, "CronJob", "couchops-backup")
    verify = one(stack, "CronJob", "couchops-backup-verify")
    deadline = timedelta(seconds=backup.spec["jobTemplate"]["spec"]["activeDeadlineSeconds"])
    # Two years of runs in their own zone: both years' clock changes included.
    start, end = datetime(2027, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)
    windows = []
    for begin in run_times(backup.spec["schedule"], backup.spec["timeZone"], start):
        if begin > end:
            break
        windows.append((begin.astimezone(UTC), begin.astimezone(UTC) + deadline))
    assert len(windows) == 731
    drills = 0
    for run in run_times(verify.spec["schedule"], verify.spec["timeZone"], start):
        if run > end:
            break
        drills += 1
        assert not any(begin <= run.astimezone(UTC) < end_ for begin, end_ in windows), run
    assert drills == 105


def test_the_backup_reaches_each_couchdb_pod_by_its_node_name(stack: list[Recorded]) -> None:
    """couchops reads each shard copy from its own node: COUCHDB_NODE_URLS applied to the
    Erlang node names of the pods gives their headless-Service DNS names on CouchDB's port."""
    template = env_of(one(stack, "CronJob", "couchops-backup"))["COUCHDB_NODE_URLS"]
    setup = one(stack, "Job").spec["template"]["spec"]["containers"][0]
    nodes = next(e["value"] for e in setup["env"] if e["name"] == "COUCHDB_NODES").split(",")
    statefulset = one(stack, "StatefulSet", "couchdb")
    namespace = statefulset.metadata["namespace"]
    ports = {
        p["name"]: p["containerPort"]
        for p in statefulset.spec["template"]["spec"]["containers"][0]["ports"]
    }
    node_url = parse_node_urls(template)
    assert [node_url(n) for n in nodes] == [
        f"https://couchdb-{i}.{statefulset.spec['serviceName']}.{namespace}.svc.cluster.local:"
        f"{int(ports['https'])}"
        for i in range(int(statefulset.spec["replicas"]))
    ]
