"""components/couchdb_cluster.py: the keys escrowed to the bank's age key, and taken back
from the escrow after a lost state (runbooks/state-safety.md)."""

from __future__ import annotations

import configparser
import json
from typing import Any

import pulumi
import pytest
from pyrage import decrypt, x25519  # type: ignore[import-untyped]

from tests.unit.harness import Recorded, StackRun, one, run_stack

RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
PARTITION = "p4rt1t10n-k3y-" + "x" * 50
COOKIE = "c00k13" + "y" * 58
UUID = "0123456789abcdef0123456789abcdef"
AUTH = "4uth-s3cr3t-" + "z" * 52


@pytest.fixture(scope="module")
def identity() -> Any:
    return x25519.Identity.generate()


def held_keys(resources: list[Recorded]) -> dict[str, str]:
    """The keys as the cluster's Secrets hold them (what the pods and jobs read)."""
    app = one(resources, "Secret", "couchdb-app").inputs["stringData"]
    server = one(resources, "Secret", "couchdb-server").inputs["stringData"]
    ini = configparser.ConfigParser(strict=True)
    ini.read_string(server["20-secrets.ini"])
    return {
        "partitionSecret": app["partitionSecret"],
        "erlangCookie": server["erlangCookie"],
        "uuid": ini.get("couchdb", "uuid"),
        "authSecret": ini.get("chttpd_auth", "secret"),
    }


def opened(run: StackRun, identity: Any) -> dict[str, str]:
    escrow: str = run.outputs["keyEscrow"]
    assert escrow.startswith("-----BEGIN AGE ENCRYPTED FILE-----\n")
    plain: dict[str, str] = json.loads(decrypt(escrow.encode(), [identity]))
    return plain


def test_a_restored_partition_key_is_the_one_the_secret_holds_not_a_generated_one() -> None:
    run = run_stack("prod", secrets={"onboarding:restoredKeys": {"partitionSecret": PARTITION}})
    app = one(run.resources, "Secret", "couchdb-app")
    assert app.inputs["stringData"]["partitionSecret"] == PARTITION
    assert app.secret_paths == ["stringData"]
    generated = {r.name for r in run.resources if r.type == RANDOM_PASSWORD}
    assert "prod-couchdb-partition-secret" not in generated
    # The others are still generated.
    assert {"prod-couchdb-erlang-cookie", "prod-couchdb-uuid"} <= generated


def test_every_restored_key_reaches_the_secrets_the_cluster_reads() -> None:
    restored = {"partitionSecret": PARTITION, "erlangCookie": COOKIE, "uuid": UUID}
    run = run_stack(
        "preprod", secrets={"onboarding:restoredKeys": {**restored, "authSecret": AUTH}}
    )
    assert held_keys(run.resources) == {**restored, "authSecret": AUTH}
    assert one(run.resources, "Secret", "couchdb-server").secret_paths == ["stringData"]


def test_the_escrow_opens_with_the_bank_identity_to_the_keys_the_secrets_hold(
    identity: Any,
) -> None:
    recipient = str(identity.to_public())
    run = run_stack("prod", {"onboarding:escrowRecipient": recipient})
    plain = opened(run, identity)
    assert plain.pop("format") == "onboarding-key-escrow/1"
    assert plain.pop("environment") == "prod"
    assert plain == held_keys(run.resources)
    # A secret in the state: the keys, even encrypted, are shown only with --show-secrets.
    assert "keyEscrow" in run.secret_outputs
    assert not [w for w in run.warnings if "escrowRecipient" in w]


def test_another_identity_cannot_open_the_escrow(identity: Any) -> None:
    run = run_stack("prod", {"onboarding:escrowRecipient": str(identity.to_public())})
    with pytest.raises(Exception, match="No matching keys"):
        decrypt(run.outputs["keyEscrow"].encode(), [x25519.Identity.generate()])


def test_a_stack_rebuilt_from_its_escrow_holds_the_same_keys_without_generating_any(
    identity: Any,
) -> None:
    recipient = {"onboarding:escrowRecipient": str(identity.to_public())}
    first = run_stack("preprod", recipient)
    # The decrypted escrow, as is, is the secret setting of the rebuilt stack.
    escrow_text = decrypt(first.outputs["keyEscrow"].encode(), [identity]).decode()
    rebuilt = run_stack("preprod", recipient, secrets={"onboarding:restoredKeys": escrow_text})
    assert held_keys(rebuilt.resources) == held_keys(first.resources)
    generated = {r.name for r in rebuilt.resources if r.type == RANDOM_PASSWORD}
    assert generated == {
        "preprod-couchdb-admin-password",
        "preprod-couchdb-app-password",
        "preprod-couchdb-admin-salt",
    }
    assert opened(rebuilt, identity) == opened(first, identity)


def test_without_a_recipient_there_is_no_escrow_and_every_run_says_so() -> None:
    run = run_stack("preprod")
    assert "keyEscrow" not in run.outputs
    assert any("onboarding:escrowRecipient is not set" in w for w in run.warnings)


def test_a_bad_recipient_stops_the_program_naming_the_setting(identity: Any) -> None:
    good = str(identity.to_public())
    corrupted = good[:-1] + ("q" if good[-1] != "q" else "p")
    for bad in ("age1notakey", corrupted, "ssh-ed25519 AAAAC3Nz", good.upper()):
        with pytest.raises(pulumi.RunError, match=r"onboarding:escrowRecipient = .*X25519"):
            run_stack("prod", {"onboarding:escrowRecipient": bad})


def test_restored_keys_in_plain_text_config_are_refused_without_showing_them() -> None:
    with pytest.raises(pulumi.RunError, match="onboarding:restoredKeys: holds keys") as error:
        run_stack("prod", {"onboarding:restoredKeys": {"partitionSecret": PARTITION}})
    assert PARTITION not in str(error.value)


def test_a_bad_restored_key_is_named_and_never_shown() -> None:
    short = "too-short-to-be-a-key"
    with pytest.raises(pulumi.RunError) as error:
        run_stack(
            "prod",
            secrets={"onboarding:restoredKeys": {"partitionSecret": short, "uuid": "ABC"}},
        )
    message = str(error.value)
    assert "onboarding:restoredKeys.partitionSecret: is not a key" in message
    assert "onboarding:restoredKeys.uuid: is not a CouchDB server uuid" in message
    assert short not in message
    assert "ABC" not in message


def test_the_escrow_of_another_environment_is_refused() -> None:
    escrow = {"format": "onboarding-key-escrow/1", "environment": "preprod", "uuid": UUID}
    with pytest.raises(pulumi.RunError, match=r"restoredKeys\.environment = 'preprod'"):
        run_stack("prod", secrets={"onboarding:restoredKeys": escrow})


def test_no_other_setting_may_be_a_secret() -> None:
    with pytest.raises(pulumi.RunError, match="onboarding:timeZone: is a secret"):
        run_stack("prod", secrets={"onboarding:timeZone": "Europe/Paris"})
