"""What an ordinary `pulumi up` or `pulumi destroy` may never delete or replace: the data and
the keys that give it meaning (runbooks/state-safety.md).

The options are read from the registration requests the program sends to the engine
(tests/unit/harness.py RecordingMonitor), not from the Python that builds them.
"""

from __future__ import annotations

from tests.unit.harness import Recorded, run_stack

RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"


def protected(stack: list[Recorded]) -> set[tuple[str, str]]:
    """Protected resources: Kubernetes objects by kind and name, others by resource name."""
    return {
        (r.kind, r.metadata["name"] if r.type.startswith("kubernetes:") else r.name)
        for r in stack
        if r.protect
    }


def test_exactly_the_keys_and_the_data_bearing_objects_are_protected(
    prod: list[Recorded], preprod: list[Recorded]
) -> None:
    for env, stack in (("prod", prod), ("preprod", preprod)):
        assert protected(stack) == {
            # The keys: partition key, cluster identity (cookie, uuid, session secret).
            ("RandomPassword", f"{env}-couchdb-partition-secret"),
            ("RandomPassword", f"{env}-couchdb-erlang-cookie"),
            ("RandomPassword", f"{env}-couchdb-uuid"),
            ("RandomPassword", f"{env}-couchdb-auth-secret"),
            # What refuses other keys in the Secrets, which are updated in place.
            ("RandomId", f"{env}-couchdb-keys-pin"),
            # The Secrets holding them, and the objects holding the data.
            ("Secret", "couchdb-server"),
            ("Secret", "couchdb-app"),
            ("StatefulSet", "couchdb"),
            ("PersistentVolumeClaim", "couchdb-backups"),
        }, env


def test_rotatable_passwords_and_everything_else_stay_unprotected(prod: list[Recorded]) -> None:
    # A rotation replaces the password: protecting it would refuse every rotation.
    passwords = {r.name: r.protect for r in prod if r.type == RANDOM_PASSWORD}
    assert passwords["prod-couchdb-admin-password"] is False
    assert passwords["prod-couchdb-app-password"] is False
    assert passwords["prod-couchdb-admin-salt"] is False
    # Nothing is protected by inheritance from a protected parent component.
    assert not [
        r.name for r in prod if r.protect and not r.type.startswith(("kubernetes:", "random:"))
    ]


def test_the_data_outlives_its_owners(prod: list[Recorded]) -> None:
    """Whatever deletes them once unprotected, the claims stay: the StatefulSet's by its
    retention policy, the backups' and the namespace's by retainOnDelete."""
    statefulset = next(r for r in prod if r.kind == "StatefulSet")
    assert statefulset.spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    retained = {r.kind for r in prod if r.retain_on_delete and r.type.startswith("kubernetes:")}
    assert {"PersistentVolumeClaim", "Namespace"} <= retained


def test_a_restored_key_has_no_generator_and_its_secret_stays_protected() -> None:
    restored = {"onboarding:restoredKeys": {"partitionSecret": "k" * 64}}
    resources = run_stack("prod", secrets=restored).resources
    assert ("RandomPassword", "prod-couchdb-partition-secret") not in protected(resources)
    assert "prod-couchdb-partition-secret" not in {r.name for r in resources}
    assert ("Secret", "couchdb-app") in protected(resources)
