"""infra/settings.py: image digests, the site's egress allow-list, ephemeral storage."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra.settings import SettingsError, parse_settings
from tests.unit.harness import raw_stack, run_stack

DIGEST = "sha256:" + "0123456789abcdef" * 4


def prod(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw_stack("prod"))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    return raw


def test_digests_are_required_unless_the_stack_says_otherwise() -> None:
    raw = prod()
    del raw["requireImageDigests"]
    with pytest.raises(SettingsError) as error:
        parse_settings(raw)
    message = str(error.value)
    assert "onboarding:couchdb.image = 'docker.io/library/couchdb:3.5.2'" in message
    assert "requireImageDigests" in message


def test_images_with_digests_pass_when_digests_are_required() -> None:
    raw = prod(
        couchdb__image=f"docker.io/library/couchdb:3.5.2@{DIGEST}",
        webapp__image=f"registry.agence.example.fr/onboarding/web@{DIGEST}",
        ops__image=f"registry.hebergeur.example.fr/onboarding/couchops:0.1.0@{DIGEST}",
    )
    del raw["requireImageDigests"]
    settings = parse_settings(raw)
    assert settings.require_image_digests is True
    assert settings.tag_only_images() == {}


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/library/couchdb:3.5.2@sha256:" + "0" * 63,  # one digit short
        "docker.io/library/couchdb:3.5.2@sha256:" + "G" * 64,  # not hex
        "docker.io/library/couchdb@md5:" + "0" * 32,
    ],
)
def test_a_malformed_digest_is_refused(image: str) -> None:
    with pytest.raises(SettingsError, match=r"onboarding:couchdb\.image"):
        parse_settings(prod(couchdb__image=image))


def test_every_tag_only_image_is_warned_at_every_run() -> None:
    warnings = run_stack("prod").warnings
    tagged = [w for w in warnings if "is pinned by tag only" in w]
    assert len(tagged) == 3
    assert any("onboarding:ops.image" in w for w in tagged)


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"name": "any", "cidrs": ["0.0.0.0/0"]}, "no allow-list"),
        ({"name": "any6", "cidrs": ["::/0"]}, "no allow-list"),
        ({"name": "hostbits", "cidrs": ["203.0.113.7/24"]}, "host bits"),
        ({"name": "by-name", "cidrs": ["idp.example.fr"]}, "CIDR"),
        ({"name": "none", "cidrs": []}, "at least 1"),
        ({"name": "port", "cidrs": ["203.0.113.0/24"], "ports": [0]}, "greater than or equal"),
        ({"name": "Bad_Name", "cidrs": ["203.0.113.0/24"]}, "webapp.egress"),
    ],
)
def test_bad_egress_rules_are_refused(rule: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SettingsError) as error:
        parse_settings(prod(webapp__egress=[rule]))
    assert "webapp.egress" in str(error.value)
    assert fragment in str(error.value)


def test_two_egress_rules_of_one_name_are_refused() -> None:
    rule = {"name": "idp", "cidrs": ["203.0.113.0/24"]}
    with pytest.raises(SettingsError, match="each name once"):
        parse_settings(prod(webapp__egress=[rule, rule]))


def test_ephemeral_storage_limit_covers_its_request() -> None:
    resources = {**raw_stack("prod")["ops"]["resources"], "ephemeralStorageRequest": "2Gi"}
    with pytest.raises(SettingsError, match=r"ephemeralStorageLimit = '1Gi'.*limit >= request"):
        parse_settings(prod(ops__resources=resources))
