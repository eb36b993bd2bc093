"""Rotating a generated password (couchdb.passwordRotation) rolls everything that uses it.

The mocks, like pulumi-random, give a RandomPassword a new value when its keepers change
(tests/unit/harness.py); what is checked here is where the program carries that value: the
Secrets, the pod templates that must roll and the setup Job that must run again.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from tests.unit.harness import Recorded, one, raw_stack, run_program

ADMIN, APP = "prod-couchdb-admin-password", "prod-couchdb-app-password"


def rotated(admin: int = 0, app: int = 0) -> list[Recorded]:
    couchdb = {**raw_stack("prod")["couchdb"], "passwordRotation": {"admin": admin, "app": app}}
    return run_program("prod", {"onboarding:couchdb": couchdb})


def changed(before: list[Recorded], after: list[Recorded]) -> set[str]:
    """Resources whose inputs differ, by resource name; none may appear or vanish."""
    old = {r.name: r.inputs for r in before}
    new = {r.name: r.inputs for r in after}
    assert old.keys() == new.keys()
    return {name for name in old if old[name] != new[name]}


def password(resources: list[Recorded], name: str) -> Any:
    return next(r for r in resources if r.name == name).inputs


def template_annotations(resources: list[Recorded], kind: str) -> dict[str, str]:
    annotations: dict[str, str] = one(resources, kind).spec["template"]["metadata"]["annotations"]
    return annotations


def setup_job_name(resources: list[Recorded]) -> str:
    return str(one(resources, "Job").metadata["name"])


@pytest.fixture(scope="module")
def baseline() -> list[Recorded]:
    return rotated()


def test_no_rotation_declared_is_the_stack_as_it_was(
    baseline: list[Recorded], prod: list[Recorded]
) -> None:
    # Generation 0 adds no keepers: a live stack gets no new password from this setting.
    assert changed(prod, baseline) == set()
    assert "keepers" not in password(baseline, ADMIN)
    assert "keepers" not in password(baseline, APP)


def test_a_second_evaluation_without_a_bump_changes_nothing(baseline: list[Recorded]) -> None:
    assert changed(baseline, rotated()) == set()
    bumped = rotated(admin=1, app=1)
    assert changed(bumped, rotated(admin=1, app=1)) == set()


def test_rotating_the_admin_password_rolls_couchdb_and_nothing_else(
    baseline: list[Recorded],
) -> None:
    after = rotated(admin=1)
    assert changed(baseline, after) == {
        ADMIN,
        "prod-couchdb-admin-secret",  # read by the ops jobs that reach CouchDB, at start
        "prod-couchdb-server-secret",  # the admin's hash, in 20-secrets.ini
        "prod-couchdb-statefulset",  # whose pods mount that file by subPath
    }
    admin = one(after, "Secret", "couchdb-admin").inputs["stringData"]["adminPassword"]
    assert admin != one(baseline, "Secret", "couchdb-admin").inputs["stringData"]["adminPassword"]
    before_sts = template_annotations(baseline, "StatefulSet")
    after_sts = template_annotations(after, "StatefulSet")
    assert after_sts["checksum/server-keys"] != before_sts["checksum/server-keys"]
    assert after_sts["checksum/config"] == before_sts["checksum/config"]
    # The admin is in the server's config, not in a CouchDB document: no setup to re-run.
    assert setup_job_name(after) == setup_job_name(baseline)


def test_rotating_the_app_password_rolls_the_site_and_reruns_the_setup_job(
    baseline: list[Recorded],
) -> None:
    after = rotated(app=1)
    assert changed(baseline, after) == {
        APP,
        "prod-couchdb-app-secret",
        "prod-webapp-deployment",  # reads it as env variables at start
        "prod-couchdb-setup",  # sets it on the app user in _users
    }
    before_app = one(baseline, "Secret", "couchdb-app").inputs["stringData"]
    after_app = one(after, "Secret", "couchdb-app").inputs["stringData"]
    assert after_app["password"] != before_app["password"]
    assert after_app["partitionSecret"] == before_app["partitionSecret"]
    key = "checksum/couchdb-credentials"
    assert (
        template_annotations(after, "Deployment")[key]
        != (template_annotations(baseline, "Deployment")[key])
    )
    # A Job never runs twice: a new name is a new Job, run once more.
    assert setup_job_name(after) != setup_job_name(baseline)
    assert setup_job_name(after).startswith("couchdb-setup-")


def test_each_further_bump_is_a_new_password(baseline: list[Recorded]) -> None:
    values = {
        one(rotated(app=n), "Secret", "couchdb-app").inputs["stringData"]["password"]
        for n in (0, 1, 2)
    }
    assert len(values) == 3


def test_the_digests_that_roll_pods_are_plain_and_reveal_no_password(
    baseline: list[Recorded],
) -> None:
    """Marked secret, a digest would show as [secret] in every preview and the Job's name
    with it; it is a SHA-256 of 40- to 64-character random values, so it reveals none."""
    passwords = {
        one(baseline, "Secret", "couchdb-app").inputs["stringData"]["password"],
        one(baseline, "Secret", "couchdb-admin").inputs["stringData"]["adminPassword"],
    }
    for kind in ("StatefulSet", "Deployment", "Job"):
        workload = one(baseline, kind)
        assert workload.secret_paths == [], kind
        assert not any(p in str(workload.inputs) for p in passwords), kind


def test_a_rotation_counter_is_a_whole_number_from_zero() -> None:
    with pytest.raises(
        pulumi.RunError, match=r"couchdb\.passwordRotation\.app = -1: .*greater than or equal to 0"
    ):
        rotated(app=-1)
