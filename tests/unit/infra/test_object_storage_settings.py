"""infra/settings.py: backup.objectStorage, escrowRecipient and couchdb.passwordRotation, with
the message an engineer reads."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrage import x25519  # type: ignore[import-untyped]

from infra.settings import SettingsError, parse_settings
from tests.unit.harness import raw_stack

# The example recipient of age's own README (github.com/FiloSottile/age).
AGE_README_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
STORAGE = {
    "endpoint": "https://s3.fr-par.scw.cloud",
    "bucket": "onboarding-backups",
    "region": "fr-par",
    "credentialsSecret": "object-storage-credentials",
    "recipients": [AGE_README_RECIPIENT],
}


def with_storage(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw_stack("prod"))
    raw["backup"]["objectStorage"] = {**STORAGE, **changes}
    return raw


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as error:
        parse_settings(raw)
    return str(error.value)


def test_a_french_provider_bucket_is_accepted_with_safe_defaults() -> None:
    storage = parse_settings(with_storage()).backup.object_storage
    assert storage is not None
    assert storage.keep_local_copy is True
    assert storage.key_prefix("prod") == "prod/"
    # Unset, there are no off-site copies at all.
    assert parse_settings(raw_stack("prod")).backup.object_storage is None


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://s3.fr-par.scw.cloud",
        "https://s3.gra.io.cloud.ovh.net",
        "https://objects.hebergeur.example.fr:8443/",
        "http://127.0.0.1:8333",
        "http://localhost:9000",
    ],
)
def test_https_endpoints_and_plain_http_on_loopback_are_accepted(endpoint: str) -> None:
    storage = parse_settings(with_storage(endpoint=endpoint)).backup.object_storage
    assert storage is not None
    assert storage.endpoint == endpoint.rstrip("/")


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://s3.fr-par.scw.cloud", "is plain http (allowed: https; http only to localhost"),
        ("http://10.0.0.5:8333", "is plain http"),
        ("ftp://s3.fr-par.scw.cloud", "is not a URL"),
        ("s3.fr-par.scw.cloud", "is not a URL"),
        ("https://s3.fr-par.scw.cloud/onboarding-backups", "has a path or query"),
        ("https://s3.fr-par.scw.cloud?x=1", "has a path or query"),
    ],
)
def test_other_endpoints_are_refused_naming_the_setting(endpoint: str, reason: str) -> None:
    message = refusal(with_storage(endpoint=endpoint))
    assert f"onboarding:backup.objectStorage.endpoint = '{endpoint}'" in message
    assert reason in message


def test_credentials_in_the_endpoint_are_refused_without_being_shown() -> None:
    message = refusal(with_storage(endpoint="https://AKIAEXAMPLE:s3cr3t@s3.fr-par.scw.cloud"))
    assert "onboarding:backup.objectStorage.endpoint" in message
    assert "carries credentials in the URL" in message
    assert "AKIAEXAMPLE" not in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    "bucket", ["abc", "onboarding-backups", "onb.backups.prod", "a1" * 31 + "z"]
)
def test_bucket_names_by_the_s3_rules_are_accepted(bucket: str) -> None:
    parse_settings(with_storage(bucket=bucket))


@pytest.mark.parametrize(
    "bucket",
    [
        "ab",
        "a" * 64,
        "Onboarding",
        "onboarding_backups",
        "-onboarding",
        "onboarding-",
        "onb..backups",
        "192.168.5.4",
        "xn--onboarding",
        "sthree-onboarding",
        "onboarding-s3alias",
        "onboarding--ol-s3",
    ],
)
def test_bucket_names_breaking_the_s3_rules_are_refused(bucket: str) -> None:
    message = refusal(with_storage(bucket=bucket))
    assert f"onboarding:backup.objectStorage.bucket = '{bucket}'" in message
    assert "is not an S3 bucket name" in message


@pytest.mark.parametrize("region", ["eu-west-1", "gra", "de-fra"])
def test_a_bucket_outside_france_is_refused(region: str) -> None:
    message = refusal(with_storage(region=region))
    assert f"onboarding:backup.objectStorage.region = '{region}'" in message
    assert "is outside France" in message


@pytest.mark.parametrize("prefix", ["", "prod/", "onboarding/prod/", "backups_2026.v1/"])
def test_prefixes_of_safe_segments_are_accepted_as_given(prefix: str) -> None:
    storage = parse_settings(with_storage(prefix=prefix)).backup.object_storage
    assert storage is not None
    assert storage.key_prefix("prod") == prefix


@pytest.mark.parametrize("prefix", ["prod", "/prod/", "prod//", "prod/ x/", "données/"])
def test_other_prefixes_are_refused(prefix: str) -> None:
    message = refusal(with_storage(prefix=prefix))
    assert f"onboarding:backup.objectStorage.prefix = '{prefix}'" in message
    assert "is not an object key prefix" in message


def test_recipients_must_be_distinct_age_public_keys() -> None:
    assert "at least 1 item" in refusal(with_storage(recipients=[]))
    twice = refusal(with_storage(recipients=[AGE_README_RECIPIENT, AGE_README_RECIPIENT]))
    assert "onboarding:backup.objectStorage.recipients: recipients repeat" in twice
    private = str(x25519.Identity.generate())
    assert private.startswith("AGE-SECRET-KEY-1")
    message = refusal(with_storage(recipients=[AGE_README_RECIPIENT, private]))
    assert "onboarding:backup.objectStorage.recipients[1]" in message
    assert "is not an age X25519 recipient" in message


def test_the_credentials_secret_is_a_kubernetes_name() -> None:
    message = refusal(with_storage(credentialsSecret="Object_Storage"))
    assert "onboarding:backup.objectStorage.credentialsSecret = 'Object_Storage'" in message


def test_the_escrow_recipient_takes_an_age_public_key() -> None:
    raw = {**raw_stack("prod"), "escrowRecipient": AGE_README_RECIPIENT}
    assert parse_settings(raw).escrow_recipient == AGE_README_RECIPIENT
    assert parse_settings(raw_stack("prod")).escrow_recipient is None


@given(st.data())
def test_every_single_character_change_of_a_recipient_is_refused(data: st.DataObject) -> None:
    """Bech32 detects any change of up to four characters: a mistyped key is refused."""
    recipient = str(x25519.Identity.generate().to_public())
    assert parse_settings({**raw_stack("prod"), "escrowRecipient": recipient})
    where = data.draw(st.integers(min_value=4, max_value=len(recipient) - 1))
    other = data.draw(st.sampled_from([c for c in BECH32 if c != recipient[where]]))
    typo = recipient[:where] + other + recipient[where + 1 :]
    message = refusal({**raw_stack("prod"), "escrowRecipient": typo})
    assert f"onboarding:escrowRecipient = '{typo}'" in message
