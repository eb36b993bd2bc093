"""components/backups.py: nightly, kept at most 30 days, proven restorable weekly."""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import croniter

from couchops.couch import parse_node_urls
from tests.unit.harness import Recorded, one


def env_of(cron: Recorded) -> dict[str, str]:
    container = cron.spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_backups_are_kept_at_most_30_days_on_a_retained_volume(stack: list[Recorded]) -> None:
    backup = one(stack, "CronJob", "couchops-backup")
    assert int(env_of(backup)["BACKUP_RETENTION_DAYS"]) <= 30
    assert env_of(backup)["BACKUP_DIR"] == "/backups"
    claim = one(stack, "PersistentVolumeClaim", "couchdb-backups")
    volumes = backup.spec["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    assert {"claimName": "couchdb-backups"} in [v.get("persistentVolumeClaim") for v in volumes]
    assert claim.spec["resources"]["requests"]["storage"]


def test_verify_drill_never_runs_while_a_backup_may_hold_the_volume(stack: list[Recorded]) -> None:
    backup = one(stack, "CronJob", "couchops-backup")
    verify = one(stack, "CronJob", "couchops-backup-verify")
    assert verify.spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "verify"
    ]
    deadline = timedelta(seconds=backup.spec["jobTemplate"]["spec"]["activeDeadlineSeconds"])
    start = datetime(2026, 1, 1)
    backups = croniter(backup.spec["schedule"], start)
    windows = []
    for _ in range(60):
        begin = backups.get_next(datetime)
        windows.append((begin, begin + deadline))
    verifies = croniter(verify.spec["schedule"], start)
    for _ in range(8):
        run = verifies.get_next(datetime)
        assert not any(begin <= run < end for begin, end in windows), run


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
        f"http://couchdb-{i}.{statefulset.spec['serviceName']}.{namespace}.svc.cluster.local:"
        f"{int(ports['http'])}"
        for i in range(int(statefulset.spec["replicas"]))
    ]
