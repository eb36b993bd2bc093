"""components/couchdb_cluster.py, as declared by the real stacks under mocks."""

from __future__ import annotations

import configparser
import hashlib
from typing import Any

import pytest

from components.couchdb_config import admin_password_hash
from tests.unit.harness import Recorded, by_kind, one, raw_stack, run_program
from tests.unit.netpol import matches, pod_templates


def statefulset(resources: list[Recorded]) -> Recorded:
    return one(resources, "StatefulSet", "couchdb")


def pod_spec(resources: list[Recorded]) -> dict[str, Any]:
    return statefulset(resources).spec["template"]["spec"]


def test_every_couchdb_pod_requires_a_distinct_node(stack: list[Recorded]) -> None:
    sts = statefulset(stack)
    pod_labels = sts.spec["template"]["metadata"]["labels"]
    terms = pod_spec(stack)["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert any(
        term["topologyKey"] == "kubernetes.io/hostname"
        and matches(term["labelSelector"], pod_labels)
        for term in terms
    )
    # The nodes exist for it: one per replica at least.
    assert sts.spec["replicas"] <= 5


def test_prod_runs_five_couchdb_nodes_with_three_copies_of_every_shard(
    prod: list[Recorded],
) -> None:
    assert statefulset(prod).spec["replicas"] == 5
    ini = one(prod, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"]
    assert "\nn = 3\n" in ini
    assert "\nq = 2\n" in ini


def test_pdb_selects_exactly_the_couchdb_pods(stack: list[Recorded]) -> None:
    pdb = one(stack, "PodDisruptionBudget", "couchdb")
    assert pdb.spec["maxUnavailable"] == 1
    selected = {
        name
        for name, pod in pod_templates(stack).items()
        if matches(pdb.spec["selector"], pod.labels)
    }
    assert selected == {"couchdb"}


def test_seedlist_names_every_pod_as_the_pods_name_themselves(prod: list[Recorded]) -> None:
    ini = one(prod, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"]
    seedlist = next(line for line in ini.splitlines() if line.startswith("seedlist"))
    expected = [
        f"couchdb@couchdb-{i}.couchdb-headless.onboarding-prod.svc.cluster.local" for i in range(5)
    ]
    assert seedlist.split(" = ")[1].split(",") == expected
    env = {e["name"]: e for e in pod_spec(prod)["containers"][0]["env"]}
    assert env["NODENAME"]["value"] == (
        "$(POD_NAME).couchdb-headless.onboarding-prod.svc.cluster.local"
    )
    headless = one(prod, "Service", "couchdb-headless")
    assert statefulset(prod).spec["serviceName"] == "couchdb-headless"
    assert headless.spec["clusterIP"] == "None"
    assert headless.spec["publishNotReadyAddresses"] is True


def test_readiness_waits_for_up_and_anonymous_access_is_refused_elsewhere(
    stack: list[Recorded],
) -> None:
    container = pod_spec(stack)["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/_up"
    ini = one(stack, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"]
    assert "require_valid_user_except_for_up = true" in ini


def test_data_lives_on_a_persistent_volume_kept_when_scaled_down(stack: list[Recorded]) -> None:
    sts = statefulset(stack)
    claim = sts.spec["volumeClaimTemplates"][0]
    mount = next(m for m in pod_spec(stack)["containers"][0]["volumeMounts"] if m["name"] == "data")
    assert claim["metadata"]["name"] == "data"
    assert mount["mountPath"] == "/opt/couchdb/data"
    assert sts.spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def test_every_pod_reads_the_same_pre_hashed_admin_entry(prod: list[Recorded]) -> None:
    secret = one(prod, "Secret", "couchdb-server")
    ini = secret.inputs["stringData"]["20-secrets.ini"]
    admin_line = next(line for line in ini.splitlines() if line.startswith("admin = "))
    assert admin_line.startswith("admin = -pbkdf2:sha256-")
    # The one Secret is mounted by the one pod template: all replicas share the hash.
    volumes = pod_spec(prod)["volumes"]
    assert {"secretName": "couchdb-server"}.items() <= next(
        v["secret"] for v in volumes if v["name"] == "server-secret"
    ).items()


def test_admin_hash_is_couchdbs_pbkdf2_format_and_deterministic() -> None:
    entry = admin_password_hash("s3cret", "0123456789abcdef0123456789abcdef", 10)
    scheme, rest = entry[1:].split("-", 1)
    derived, salt, iterations = rest.split(",")
    assert scheme == "pbkdf2:sha256"
    assert salt == "0123456789abcdef0123456789abcdef"
    assert iterations == "10"
    assert derived == hashlib.pbkdf2_hmac("sha256", b"s3cret", salt.encode(), 10).hex()
    assert entry == admin_password_hash("s3cret", salt, 10)


def test_generated_secrets_are_pulumi_secrets(prod: list[Recorded]) -> None:
    for name in ("couchdb-server", "couchdb-admin", "couchdb-app"):
        secret = one(prod, "Secret", name)
        assert secret.secret_paths == ["stringData"], name


def test_generated_secrets_are_stable_across_updates(prod: list[Recorded]) -> None:
    # A keeper would regenerate the value whenever it changes; none may exist. The keys' pin
    # generates nothing used: its keepers are what it is for (runbooks/state-safety.md).
    randoms = [r for r in prod if r.type.startswith("random:") and not r.name.endswith("-keys-pin")]
    assert len(randoms) == 7
    # RandomPassword only: RandomId keeps its value in plain text in the state.
    assert {r.type for r in randoms} == {"random:index/randomPassword:RandomPassword"}
    assert all("keepers" not in r.inputs for r in randoms)
    rerun = run_program("prod")
    assert (
        one(rerun, "Secret", "couchdb-server").inputs
        == one(prod, "Secret", "couchdb-server").inputs
    )


def test_erlang_cookie_is_a_file_from_the_secret_never_an_env_value_nor_an_argument(
    stack: list[Recorded],
) -> None:
    spec = pod_spec(stack)
    container = spec["containers"][0]
    assert not any("COOKIE" in e["name"].upper() for e in container["env"])
    # The image's entrypoint is kept; the zone start script, its args, never names the cookie.
    assert "command" not in container
    assert not any("COOKIE" in arg.upper() for arg in container.get("args", []))
    # Copied by the init container from the Secret's file into memory, mounted where Erlang
    # reads it ($HOME/.erlang.cookie).
    volumes = {v["name"]: v for v in spec["volumes"]}
    cookie_mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == "/opt/couchdb/.erlang.cookie"
    )
    assert volumes[cookie_mount["name"]]["emptyDir"]["medium"] == "Memory"
    assert {"name": "HOME", "value": "/opt/couchdb"} in container["env"]
    (init,) = spec["initContainers"]
    sources = {m["name"] for m in init["volumeMounts"]}
    assert cookie_mount["name"] in sources
    secret_sources = [volumes[name]["secret"] for name in sources if "secret" in volumes[name]]
    assert secret_sources == [
        {
            "secretName": "couchdb-server",
            "defaultMode": 0o440,
            "items": [{"key": "erlangCookie", "path": "erlangCookie"}],
        }
    ]


def test_setup_job_reruns_exactly_when_the_cluster_spec_changes(prod: list[Recorded]) -> None:
    original = one(prod, "Job").metadata["name"]
    assert original.startswith("couchdb-setup-")
    assert one(run_program("prod"), "Job").metadata["name"] == original
    couchdb = raw_stack("prod")["couchdb"]
    changed = run_program("prod", {"onboarding:couchdb": {**couchdb, "shards": 4}})
    assert one(changed, "Job").metadata["name"] != original


def test_setup_job_runs_the_ops_tool_with_the_cluster_settings(prod: list[Recorded]) -> None:
    job = one(prod, "Job")
    container = job.spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "registry.hebergeur.example.fr/onboarding/couchops:0.1.0"
    assert container["args"] == ["cluster-setup"]
    assert env["COUCHDB_URL"] == "https://couchdb.onboarding-prod.svc.cluster.local:6984"
    assert env["COUCHDB_NODES"].count("couchdb@") == 5
    assert (env["COUCHDB_DATABASE"], env["COUCHDB_SHARDS"], env["COUCHDB_REPLICAS"]) == (
        "onboarding",
        "2",
        "3",
    )


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment", "Job", "CronJob"])
def test_every_pod_runs_unprivileged_read_only_with_requests_and_limits(
    stack: list[Recorded], kind: str
) -> None:
    for workload in by_kind(stack, kind):
        spec = workload.spec
        template = (
            spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]
        )
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["readOnlyRootFilesystem"] is True
            requests = container["resources"]["requests"]
            assert set(requests) == {"cpu", "memory", "ephemeral-storage"}
            assert {"memory", "ephemeral-storage"} <= set(container["resources"]["limits"])


def test_couchdb_never_compacts_a_view_by_itself(stack: list[Recorded]) -> None:
    """Automatic view compaction started while an index copy lags the purges leaves rows of
    purged documents in it for good (CouchDB 3.5.2): smoosh's size channels for views get a
    maximum size of 0, so no view file is ever queued; couchops compacts views after purging."""
    ini = configparser.ConfigParser(strict=True)
    ini.read_string(one(stack, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"])
    for channel in ("smoosh.ratio_views", "smoosh.slack_views"):
        assert ini.get(channel, "max_size") == "0", channel
