"""components/ingress.py: the public entry leads to the site and nowhere else."""

from __future__ import annotations

from tests.unit.harness import Recorded, by_kind, one


def backends(stack: list[Recorded]) -> set[str]:
    found = set()
    for ingress in by_kind(stack, "Ingress"):
        default = ingress.spec.get("defaultBackend")
        if default:
            found.add(default["service"]["name"])
        for rule in ingress.spec["rules"]:
            for path in rule["http"]["paths"]:
                found.add(path["backend"]["service"]["name"])
    return found


def test_no_ingress_path_reaches_couchdb(stack: list[Recorded]) -> None:
    couchdb_services = {
        s.metadata["name"]
        for s in by_kind(stack, "Service")
        if s.metadata["name"].startswith("couchdb")
    }
    assert couchdb_services == {"couchdb", "couchdb-headless"}
    assert backends(stack) == {"webapp"}


def test_site_is_served_over_tls_for_its_host_only(prod: list[Recorded]) -> None:
    ingress = one(prod, "Ingress", "onboarding")
    host = "ouverture-compte.banque.example.fr"
    assert [r["host"] for r in ingress.spec["rules"]] == [host]
    assert ingress.spec["tls"] == [{"hosts": [host], "secretName": "onboarding-tls"}]
    annotations = ingress.metadata["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"


def test_rate_limit_body_size_and_security_headers(prod: list[Recorded]) -> None:
    annotations = one(prod, "Ingress", "onboarding").metadata["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-rps"] == "20"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "2m"
    headers_ref = annotations["nginx.ingress.kubernetes.io/custom-headers"]
    namespace, name = headers_ref.split("/")
    headers = one(prod, "ConfigMap", name)
    assert headers.metadata["namespace"] == namespace == "onboarding-prod"
    assert headers.inputs["data"]["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers.inputs["data"]["X-Frame-Options"] == "DENY"
