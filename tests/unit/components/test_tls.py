"""TLS inside the cluster, read from what both stacks declare: cert-manager's CA chain and
CouchDB's certificate (components/tls.py), CouchDB's HTTPS and its Erlang distribution over TLS
(components/couchdb_config.py, couchdb_cluster.py), and every client verifying the CA.

What each check compares against is read from other objects than the one it checks (the
StatefulSet's own name, replicas and headless Service for the certificate's names; the mounts
for the paths the ini and the optfile name), so the test does not recompute the code's own
strings. The rendered files themselves ran on a real 3-node CouchDB 3.5.2 (issue 14's report).
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from components.couchdb_config import TlsFiles, render_ssl_dist_optfile
from tests.unit.harness import Recorded, by_kind, one, pod_templates_specs

GO_DURATION = re.compile(r"^(\d+)h$")


def certificates(stack: list[Recorded]) -> dict[str, dict[str, Any]]:
    return {r.metadata["name"]: r.spec for r in by_kind(stack, "Certificate")}


def issuers(stack: list[Recorded]) -> dict[str, dict[str, Any]]:
    return {r.metadata["name"]: r.spec for r in by_kind(stack, "Issuer")}


def couchdb_serving(stack: list[Recorded]) -> dict[str, Any]:
    """The certificate whose Secret the CouchDB pods mount."""
    pod = one(stack, "StatefulSet", "couchdb").spec["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    found = [spec for spec in certificates(stack).values() if spec["secretName"] in secrets]
    assert len(found) == 1, found
    return found[0]


def hours(duration: str) -> int:
    match = GO_DURATION.match(duration)
    assert match, duration
    return int(match.group(1))


def test_the_ca_is_bootstrapped_by_a_self_signed_issuer_and_issues_couchdb_s_certificate(
    stack: list[Recorded],
) -> None:
    assert not by_kind(stack, "ClusterIssuer"), "each environment has its own, namespaced CA"
    namespace = one(stack, "StatefulSet", "couchdb").metadata["namespace"]
    for r in [*by_kind(stack, "Issuer"), *by_kind(stack, "Certificate")]:
        assert r.metadata["namespace"] == namespace, r.name
    serving = couchdb_serving(stack)
    ca_issuer = issuers(stack)[serving["issuerRef"]["name"]]
    assert serving["issuerRef"]["kind"] == "Issuer"
    ca_certificate = next(
        spec
        for spec in certificates(stack).values()
        if spec["secretName"] == ca_issuer["ca"]["secretName"]
    )
    assert ca_certificate["isCA"] is True
    root = issuers(stack)[ca_certificate["issuerRef"]["name"]]
    assert root == {"selfSigned": {}}
    # The CA keeps its key when renewed, so clients' ca.crt keeps verifying older leaves.
    assert ca_certificate["privateKey"]["rotationPolicy"] == "Never"
    assert hours(ca_certificate["renewBefore"]) < hours(ca_certificate["duration"])


def test_couchdb_s_certificate_is_short_lived_renewed_early_with_a_new_key_for_both_sides(
    stack: list[Recorded],
) -> None:
    serving = couchdb_serving(stack)
    duration, renew = hours(serving["duration"]), hours(serving["renewBefore"])
    assert duration <= 90 * 24
    # Renewed with a third of its life left at least: days to notice a failed renewal.
    assert 3 * renew >= duration > renew
    assert serving["privateKey"]["rotationPolicy"] == "Always"
    # Served on HTTPS and the distribution's listener, presented when a node connects.
    assert {"server auth", "client auth"} <= set(serving["usages"])
    assert "isCA" not in serving


def test_the_certificate_names_the_client_service_and_every_pod_s_headless_name(
    stack: list[Recorded],
) -> None:
    statefulset = one(stack, "StatefulSet", "couchdb")
    namespace = statefulset.metadata["namespace"]
    service = one(stack, "Service", "couchdb").metadata["name"]
    pods = [
        f"{statefulset.metadata['name']}-{i}.{statefulset.spec['serviceName']}.{namespace}"
        ".svc.cluster.local"
        for i in range(int(statefulset.spec["replicas"]))
    ]
    names = set(couchdb_serving(stack)["dnsNames"])
    assert {f"{service}.{namespace}.svc.cluster.local", *pods} <= names
    # Every name a node is known by to its peers (the host of its Erlang node name), as OTP
    # checks it when it connects (server_name_indication = that host).
    setup = one(stack, "Job").spec["template"]["spec"]["containers"][0]
    nodes = next(e["value"] for e in setup["env"] if e["name"] == "COUCHDB_NODES").split(",")
    assert {node.split("@", 1)[1] for node in nodes} <= names


def couchdb_container(stack: list[Recorded]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(stack, "StatefulSet", "couchdb").spec["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "couchdb")


def mounted_file(
    pod: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[str | None, str]:
    """(volume source name, key) of the file at `path` in the container: through a mount of
    a whole directory (the kubelet updates it) or a subPath (never updated)."""
    volumes = {v["name"]: v for v in pod["volumes"]}

    def source(mount: dict[str, Any]) -> str | None:
        volume = volumes.get(mount["name"], {})
        name = volume.get("secret", {}).get("secretName") or volume.get("configMap", {}).get("name")
        return str(name) if name else None

    # A file mounted at the path itself hides the directory mounted above it.
    for mount in container["volumeMounts"]:
        if mount.get("subPath") and mount["mountPath"] == path:
            return source(mount), mount["subPath"]
    for mount in container["volumeMounts"]:
        if not mount.get("subPath") and PurePosixPath(path).parent == PurePosixPath(
            mount["mountPath"]
        ):
            return source(mount), PurePosixPath(path).name
    raise AssertionError(f"nothing mounted at {path}")


def cluster_ini(stack: list[Recorded]) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, inline_comment_prefixes=None)
    parser.read_string(one(stack, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"])
    return parser


def test_couchdb_serves_https_with_the_mounted_certificate_which_renewals_reach(
    stack: list[Recorded],
) -> None:
    pod, container = couchdb_container(stack)
    ssl = cluster_ini(stack)["ssl"]
    assert ssl["enable"] == "true"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(ssl["port"]) == ports["https"]
    secret = couchdb_serving(stack)["secretName"]
    for option, key in (
        ("cert_file", "tls.crt"),
        ("key_file", "tls.key"),
        ("cacert_file", "ca.crt"),
    ):
        assert mounted_file(pod, container, ssl[option]) == (secret, key), option
    mount = next(
        m
        for m in container["volumeMounts"]
        if m["mountPath"] == str(PurePosixPath(ssl["cert_file"]).parent)
    )
    assert "subPath" not in mount and mount["readOnly"] is True


def test_probes_and_services_use_https_and_the_plain_port_is_reached_by_nothing(
    stack: list[Recorded],
) -> None:
    _, container = couchdb_container(stack)
    https = int(cluster_ini(stack)["ssl"]["port"])
    plain = int(cluster_ini(stack)["chttpd"]["port"])
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/_up",
        "port": "https",
        "scheme": "HTTPS",
    }
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == "https"
    assert plain not in {p["containerPort"] for p in container["ports"]}
    for service in by_kind(stack, "Service"):
        if service.metadata["name"].startswith("couchdb"):
            ports = {p["port"] for p in service.spec["ports"]}
            assert https in ports and plain not in ports, service.metadata["name"]


def erlang_terms(text: str) -> Any:
    """The one term of an Erlang config file (lists, tuples, atoms, strings, integers), as
    Python lists, tuples and strings; a malformed file raises."""
    text = re.sub(r"%[^\n]*", "", text)
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[\[\]{},.]|[A-Za-z0-9_@]+|\S', text)
    position = 0

    def term() -> Any:
        nonlocal position
        token = tokens[position]
        position += 1
        if token in "[{":
            close, items = ("]" if token == "[" else "}"), []
            while tokens[position] != close:
                items.append(term())
                if tokens[position] == ",":
                    position += 1
                else:
                    assert tokens[position] == close, tokens[position:]
            position += 1
            return items if close == "]" else tuple(items)
        assert re.fullmatch(r'"[^"]*"|\'[^\']*\'|[a-z][A-Za-z0-9_@]*|\d+', token), token
        return token.strip("\"'")

    value = term()
    assert tokens[position:] == ["."], tokens[position:]
    return value


def test_the_erlang_distribution_runs_over_tls_with_peer_verification_both_ways(
    stack: list[Recorded],
) -> None:
    pod, container = couchdb_container(stack)
    env = {e["name"]: e.get("value") for e in container["env"]}
    flags = shlex.split(env["ERL_FLAGS"])
    assert flags[flags.index("-proto_dist") + 1] == "inet_tls"
    optfile = flags[flags.index("-ssl_dist_optfile") + 1]
    config_map, key = mounted_file(pod, container, optfile)
    assert config_map is not None
    text = one(stack, "ConfigMap", config_map).inputs["data"][key]
    sides = dict(erlang_terms(text))
    assert set(sides) == {"server", "client"}
    secret = couchdb_serving(stack)["secretName"]
    for side, options in sides.items():
        opts = dict(options)
        assert opts["verify"] == "verify_peer", side
        for option, file in (
            ("certfile", "tls.crt"),
            ("keyfile", "tls.key"),
            ("cacertfile", "ca.crt"),
        ):
            assert mounted_file(pod, container, opts[option]) == (secret, file), (side, option)
    # A peer without a certificate of the CA is refused, not merely unverified.
    assert dict(sides["server"])["fail_if_no_peer_cert"] == "true"


def test_the_optfile_reader_refuses_a_malformed_file() -> None:
    good = render_ssl_dist_optfile(TlsFiles())
    assert dict(erlang_terms(good))
    for broken in (good.rstrip().rstrip("."), good.replace("]},\n {client", "}},\n {client", 1)):
        with pytest.raises((AssertionError, IndexError)):
            erlang_terms(broken)


def test_every_couchdb_client_uses_https_to_a_certified_name_and_mounts_only_the_ca(
    stack: list[Recorded],
) -> None:
    serving = couchdb_serving(stack)
    names = set(serving["dnsNames"])
    https = int(cluster_ini(stack)["ssl"]["port"])
    clients = 0
    for workload, pod in pod_templates_specs(stack).items():
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "COUCHDB_URL" not in env:
                continue
            clients += 1
            url = urlsplit(env["COUCHDB_URL"])
            assert (url.scheme, url.hostname in names, url.port) == ("https", True, https), workload
            ca = mounted_file(pod, container, env["COUCHDB_CA_FILE"])
            assert ca == (serving["secretName"], "ca.crt"), workload
            volume = next(
                v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == ca[0]
            )
            # The key and certificate beside it in the Secret are not projected.
            assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], workload
            template = env.get("COUCHDB_NODE_URLS")
            if template:
                assert template.startswith("https://") and f":{https}" in template, workload
    assert clients >= 4  # the site, the setup Job, the backup and the purge


def test_nothing_in_the_program_or_the_ops_tool_turns_certificate_verification_off() -> None:
    root = Path(__file__).resolve().parents[3]
    offenders = []
    for package in ("components", "stacks", "infra", "couchops", "supervision"):
        for path in Path(root / package).rglob("*.py"):
            text = path.read_text()
            if re.search(
                r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context",
                text,
            ):
                offenders.append(str(path))
    assert offenders == []
