"""components/webapp.py: the management port (metrics, health) is the probes' and
Prometheus' only, never the Service's."""

from __future__ import annotations

import pytest

from infra.settings import parse_settings
from tests.unit.harness import Recorded, one, raw_stack


@pytest.mark.parametrize("env", ["prod", "preprod"])
def test_probes_and_scrape_use_the_management_port_and_the_service_the_public_one(
    env: str, prod: list[Recorded], preprod: list[Recorded]
) -> None:
    stack = prod if env == "prod" else preprod
    site = parse_settings(raw_stack(env)).webapp
    (container,) = one(stack, "Deployment", "webapp").spec["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": site.port, "management": site.management_port}
    env_vars = {e["name"]: e.get("value") for e in container["env"]}
    assert env_vars["PORT"] == str(site.port)
    assert env_vars["MANAGEMENT_PORT"] == str(site.management_port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": site.health_path, "port": "management"}
    (endpoint,) = one(stack, "PodMonitor", "webapp").spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("management", site.metrics_path)
    service_ports = one(stack, "Service", "webapp").spec["ports"]
    assert [p["targetPort"] for p in service_ports] == ["http"]
