"""infra/settings.py: the edge's and the site's management settings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra.settings import SettingsError, parse_settings
from tests.unit.harness import raw_stack


def changed(stack: str, section: str, **values: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw_stack(stack))
    raw[section].update(values)
    return raw


def rejected(raw: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as error:
        parse_settings(raw)
    return str(error.value)


def test_defaults_of_the_gateway_and_the_management_port() -> None:
    raw = copy.deepcopy(raw_stack("prod"))
    for key in ("gateway", "publicPaths"):
        raw["ingress"].pop(key, None)
    for key in ("managementPort", "metricsPath", "healthPath"):
        raw["webapp"].pop(key, None)
    settings = parse_settings(raw)
    assert settings.ingress.gateway.class_name == "envoy-gateway"
    assert settings.ingress.gateway.proxy_namespace == "envoy-gateway-system"
    assert settings.ingress.public_paths == ["/"]
    assert (settings.webapp.management_port, settings.webapp.metrics_path) == (9090, "/metrics")
    assert settings.webapp.health_path == "/healthz"


@pytest.mark.parametrize(
    ("key", "value"), [("className", "nginx"), ("controllerNamespace", "ingress-nginx")]
)
def test_ingress_nginx_keys_are_refused_with_their_replacement(key: str, value: str) -> None:
    message = rejected(changed("prod", "ingress", **{key: value}))
    assert f"onboarding:ingress.{key} = '{value}'" in message
    assert "retired ingress-nginx" in message and "gateway.className" in message


def test_management_port_must_differ_from_the_public_port() -> None:
    message = rejected(changed("prod", "webapp", port=8080, managementPort=8080))
    assert "onboarding:webapp.managementPort = 8080" in message
    assert "a port of its own" in message


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/metrics/extra", "/healthz/ready"])
def test_a_public_path_inside_a_management_path_is_refused(path: str) -> None:
    message = rejected(changed("prod", "ingress", publicPaths=["/", path]))
    assert f"onboarding:ingress.publicPaths = '{path}'" in message
    assert "management path" in message


@pytest.mark.parametrize("path", ["/", "/ouverture", "/static/js", "/metricsboard"])
def test_public_paths_outside_the_management_paths_are_accepted(path: str) -> None:
    settings = parse_settings(changed("prod", "ingress", publicPaths=[path]))
    assert settings.ingress.public_paths == [path]


@pytest.mark.parametrize("path", ["", "metrics", "/a//b", "/trailing/", "/a b", "/*"])
def test_malformed_public_paths_are_refused(path: str) -> None:
    assert "onboarding:ingress.publicPaths" in rejected(
        changed("prod", "ingress", publicPaths=[path])
    )


def test_repeated_public_paths_are_refused() -> None:
    assert "listed 2 times" in rejected(changed("prod", "ingress", publicPaths=["/a", "/a"]))


@pytest.mark.parametrize(
    ("size", "quantity"), [("2m", "2Mi"), ("512k", "512Ki"), ("1M", "1Mi"), ("65536", "65536")]
)
def test_max_body_size_keeps_ingress_nginx_s_meaning(size: str, quantity: str) -> None:
    settings = parse_settings(changed("prod", "ingress", maxBodySize=size))
    assert settings.ingress.max_body_quantity() == quantity


@pytest.mark.parametrize("size", ["0", "2g", "2 m", "-1"])
def test_bad_max_body_sizes_are_refused(size: str) -> None:
    assert "onboarding:ingress.maxBodySize" in rejected(
        changed("prod", "ingress", maxBodySize=size)
    )
