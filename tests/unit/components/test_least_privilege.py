"""Least privilege, read from what the stacks declare: each workload's identity, the secret
keys each one can read, its disk, its root filesystem and where it may connect outside."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.harness import Recorded, by_kind, pod_templates_specs, raw_stack, run_program
from tests.unit.netpol import Policies, pod_templates


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def secret_keys_read(pod: dict[str, Any]) -> set[str]:
    """`<secret>/<key>` of every Secret value the pod's containers can read, through a
    volume or an env reference. A volume of a whole Secret reads as `<secret>/*`."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    read: set[str] = set()
    for container in containers(pod):
        for mount in container.get("volumeMounts", []):
            # `data` comes from the StatefulSet's claim templates, not from `volumes`.
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret is None:
                continue
            items = secret.get("items")
            if not items:
                read.add(f"{secret['secretName']}/*")
            read.update(f"{secret['secretName']}/{item['key']}" for item in items or [])
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                read.add(f"{ref['name']}/{ref['key']}")
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                read.add(f"{source['secretRef']['name']}/*")
    return read


@pytest.fixture(scope="module")
def with_consolidation() -> list[Recorded]:
    consolidation = {**raw_stack("prod").get("consolidation", {}), "enabled": True}
    return run_program("prod", {"onboarding:consolidation": consolidation})


def test_each_workload_reads_only_the_secret_keys_it_uses(
    with_consolidation: list[Recorded],
) -> None:
    pods = pod_templates_specs(with_consolidation)
    read = {
        # Job names carry a digest of their spec.
        name.rsplit("-", 1)[0]
        if name.startswith(("couchdb-setup-", "couchops-consolidate-"))
        else name: secret_keys_read(pod)
        for name, pod in pods.items()
    }
    # The CA certificate alone of the TLS Secret, never its key: what verifies CouchDB's HTTPS.
    admin = {"couchdb-admin/adminUsername", "couchdb-admin/adminPassword", "couchdb-tls/ca.crt"}
    assert read == {
        # The cookie (copied to a file by the init container), the server's ini, and its
        # certificate, key and CA (the whole cert-manager Secret).
        "couchdb": {
            "couchdb-server/erlangCookie",
            "couchdb-server/20-secrets.ini",
            "couchdb-tls/*",
        },
        "webapp": {
            "couchdb-app/username",
            "couchdb-app/password",
            "couchdb-app/partitionSecret",
            "couchdb-tls/ca.crt",
        },
        # Sets the app user's password; never the partition key beside it.
        "couchdb-setup": admin | {"couchdb-app/username", "couchdb-app/password"},
        "couchops-backup": admin,
        "couchops-purge": admin,
        # Read or delete backups only: no CouchDB credential at all.
        "couchops-backup-verify": set(),
        "couchops-backup-expire": set(),
        "couchops-consolidate": admin | {"couchdb-app/partitionSecret"},
    }


def test_every_workload_has_its_own_service_account_without_a_token(
    with_consolidation: list[Recorded],
) -> None:
    pods = pod_templates_specs(with_consolidation)
    accounts = {r.metadata["name"]: r for r in by_kind(with_consolidation, "ServiceAccount")}
    used = [pod["serviceAccountName"] for pod in pods.values()]
    assert len(used) == len(set(used)) == len(pods) == 8
    assert set(used) == set(accounts)
    for name, pod in pods.items():
        assert pod["automountServiceAccountToken"] is False, name
        account = accounts[pod["serviceAccountName"]]
        assert account.inputs["automountServiceAccountToken"] is False
        assert account.metadata["namespace"] == "onboarding-prod"
    # Nothing grants any of them a right on the API.
    assert not by_kind(with_consolidation, "RoleBinding")
    assert not by_kind(with_consolidation, "ClusterRoleBinding")


def test_every_container_has_bounded_disk_and_a_read_only_root(stack: list[Recorded]) -> None:
    for name, pod in pod_templates_specs(stack).items():
        for container in containers(pod):
            resources = container["resources"]
            assert "ephemeral-storage" in resources["requests"], (name, container["name"])
            assert "ephemeral-storage" in resources["limits"], (name, container["name"])
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        for volume in pod.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (name, volume["name"])


def test_couchdb_writes_only_to_its_volumes(stack: list[Recorded]) -> None:
    """The image's entrypoint appends to etc/vm.args and touches etc/local.d/docker.ini, and
    CouchDB writes its config changes there: etc is a bounded emptyDir that the init
    container fills from the same image, with our ini files mounted on top, read-only."""
    (sts,) = by_kind(stack, "StatefulSet")
    pod = sts.spec["template"]["spec"]
    (init,) = pod["initContainers"]
    (couchdb,) = pod["containers"]
    assert init["image"] == couchdb["image"]
    assert "cp -R /opt/couchdb/etc/. /runtime/etc/" in init["command"][-1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"]: m["name"] for m in couchdb["volumeMounts"] if not m.get("readOnly")}
    assert writable == {
        "/opt/couchdb/data": "data",
        "/opt/couchdb/etc": "etc",
        "/opt/couchdb/.erlang.cookie": "erlang-cookie",
        "/tmp": "tmp",  # noqa: S108 (the container's own /tmp, an emptyDir)
    }
    assert "emptyDir" in volumes["etc"]
    on_top = [m for m in couchdb["volumeMounts"] if m["mountPath"].startswith("/opt/couchdb/etc/")]
    assert {m["mountPath"] for m in on_top} >= {
        "/opt/couchdb/etc/local.d/10-cluster.ini",
        "/opt/couchdb/etc/local.d/20-secrets.ini",
    }
    assert all(m.get("readOnly") and m.get("subPath") for m in on_top)
    # Mounted after etc itself, or etc's mount would hide them.
    paths = [m["mountPath"] for m in couchdb["volumeMounts"]]
    assert all(paths.index("/opt/couchdb/etc") < paths.index(m["mountPath"]) for m in on_top)


EXTERNAL = "203.0.113.10"  # TEST-NET-3: no real service


def test_the_site_reaches_nothing_outside_by_default(stack: list[Recorded]) -> None:
    policies, pods = Policies(stack), pod_templates(stack)
    for port in (443, 80, 8443):
        assert not policies.can_reach_address(pods["webapp"], EXTERNAL, port)


def test_the_site_reaches_exactly_the_external_services_of_its_allow_list() -> None:
    webapp = {
        **raw_stack("prod")["webapp"],
        "egress": [
            {
                "name": "identity-check",
                "host": "api.identite.example.fr",
                "cidrs": ["203.0.113.0/28"],
                "ports": [443],
            },
            {"name": "e-signature", "cidrs": ["198.51.100.32/27", "2001:db8:10::/48"]},
        ],
    }
    resources = run_program("prod", {"onboarding:webapp": webapp})
    policies, pods = Policies(resources), pod_templates(resources)
    site = pods["webapp"]
    assert policies.can_reach_address(site, EXTERNAL, 443)
    assert not policies.can_reach_address(site, EXTERNAL, 80)
    assert not policies.can_reach_address(site, "203.0.113.16", 443)  # just past the /28
    assert policies.can_reach_address(site, "198.51.100.40", 443)  # default port 443
    assert policies.can_reach_address(site, "2001:db8:10::5", 443)
    assert not policies.can_reach_address(site, "10.0.0.5", 443)
    # The allow-list is the site's alone: no other pod gains a way out.
    for name, pod in pods.items():
        if name != "webapp":
            assert not policies.can_reach_address(pod, EXTERNAL, 443), name
    named = {
        r.metadata["name"]: r
        for r in by_kind(resources, "NetworkPolicy")
        if r.metadata["name"].startswith("webapp-egress-")
    }
    assert set(named) == {"webapp-egress-identity-check", "webapp-egress-e-signature"}
    annotations = named["webapp-egress-identity-check"].metadata["annotations"]
    assert annotations == {"onboarding.example.fr/external-host": "api.identite.example.fr"}
