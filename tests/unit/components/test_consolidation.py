"""components/consolidation.py: the opt-in migration of the legacy per-user databases."""

from __future__ import annotations

from tests.unit.harness import Recorded, by_kind, one, raw_stack, run_program
from tests.unit.netpol import Policies, pod_templates


def consolidation_jobs(stack: list[Recorded]) -> list[Recorded]:
    return [
        j for j in by_kind(stack, "Job") if j.metadata["name"].startswith("couchops-consolidate")
    ]


def test_no_migration_runs_unless_the_stack_asks_for_it(stack: list[Recorded]) -> None:
    assert consolidation_jobs(stack) == []


def test_enabled_migration_runs_couchops_with_the_shared_partition_key() -> None:
    settings = raw_stack("preprod")
    resources = run_program(
        "preprod", {"onboarding:consolidation": {"enabled": True, "concurrency": 4}}
    )
    (job,) = consolidation_jobs(resources)
    pod = job.spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["args"] == ["consolidate", "--concurrency", "4"]
    assert env["COUCHDB_DATABASE"] == settings["couchdb"]["database"]
    # Sources read from each copy's own pod, as the backup does (test_backups checks that
    # this template gives the pods' DNS names).
    backup = one(resources, "CronJob", "couchops-backup").spec["jobTemplate"]["spec"]
    backup_env = {
        e["name"]: e.get("value") for e in backup["template"]["spec"]["containers"][0]["env"]
    }
    assert env["COUCHDB_NODE_URLS"] == backup_env["COUCHDB_NODE_URLS"] == "https://{host}:6984"
    key_file = env["USER_PARTITION_SECRET_FILE"]
    volume = next(v for v in pod["volumes"] if v["name"] == "couchdb-app")
    assert volume["secret"]["secretName"] == "couchdb-app"
    assert volume["secret"]["items"] == [{"key": "partitionSecret", "path": "partitionSecret"}]
    assert key_file.endswith("/partitionSecret")
    # The site derives partitions with the very same key.
    site = one(resources, "Deployment", "webapp").spec["template"]["spec"]["containers"][0]
    ref = next(e for e in site["env"] if e["name"] == "USER_PARTITION_SECRET")
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "couchdb-app", "key": "partitionSecret"}
    policies = Policies(resources)
    pods = pod_templates(resources)
    assert policies.can_connect(pods[job.metadata["name"]], pods["couchdb"], 6984)


def test_turning_on_source_deletion_runs_a_new_job() -> None:
    first = consolidation_jobs(
        run_program("preprod", {"onboarding:consolidation": {"enabled": True}})
    )[0]
    second = consolidation_jobs(
        run_program(
            "preprod", {"onboarding:consolidation": {"enabled": True, "deleteSources": True}}
        )
    )[0]
    assert first.metadata["name"] != second.metadata["name"]
    assert "--delete-sources" in second.spec["template"]["spec"]["containers"][0]["args"]
    assert "--delete-sources" not in first.spec["template"]["spec"]["containers"][0]["args"]
