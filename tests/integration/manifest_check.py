"""Validation of the manifests the real CLI renders into rendered/<stack>/.

Used by scripts/render-and-validate.sh (as a command) and by the integration tests (as a
module).

- Built-in kinds: kubernetes-validate in strict mode (unknown fields rejected) against the
  Kubernetes version the stack names in `onboarding:kubernetesVersion`.
- Custom resources: kubernetes-validate has no schema for them, so each kind we render is
  handled explicitly below (CRD_CHECKS): required fields and types checked against the
  operator's documented API, and for PrometheusRule the rules themselves are compiled by
  `promtool check rules` when promtool is installed. A custom kind missing from CRD_CHECKS
  fails validation: nothing passes unchecked.
- With `--crds DIR` (the CRD files scripts/bootstrap-kube.sh copies from the operators' module
  zips; repeatable), every custom resource is also validated against its CRD's
  openAPIV3Schema, strictly: a field the schema does not declare is an error (the API server
  would silently prune it). The CEL rules (x-kubernetes-validations) are the API server's to
  check: tests/integration/test_deploy.py applies the objects to a real one. A kind in
  SCHEMA_REQUIRED (Gateway API, Envoy Gateway) without its CRD in those directories fails.

    python tests/integration/manifest_check.py rendered/prod --kubernetes-version 1.34.2 \
        [--crds DIR ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml
from kubernetes_validate import utils as kv

Manifest = dict[str, Any]


@dataclass
class Report:
    checked: int = 0
    builtin: int = 0
    custom: int = 0
    schema_checked: int = 0
    errors: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


def stack_kubernetes_version(project_root: Path, stack: str) -> str:
    """`onboarding:kubernetesVersion` from Pulumi.<stack>.yaml."""
    path = project_root / f"Pulumi.{stack}.yaml"
    config = yaml.safe_load(path.read_text())["config"]
    version = config.get("onboarding:kubernetesVersion")
    if not version:
        raise SystemExit(f"{path}: no onboarding:kubernetesVersion")
    return str(version)


def load_manifests(directory: Path) -> Iterator[tuple[Path, Manifest]]:
    for path in sorted(directory.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


# --- custom resources -------------------------------------------------------------------------


def _require(
    report: Report, where: str, obj: Any, dotted: str, kind: type | tuple[type, ...]
) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            report.fail(where, f"missing {dotted}")
            return None
        value = value[part]
    if not isinstance(value, kind):
        report.fail(where, f"{dotted} must be {kind}, got {type(value).__name__}")
        return None
    return value


def _only_keys(
    report: Report, where: str, obj: dict[str, Any], allowed: set[str], what: str
) -> None:
    unknown = set(obj) - allowed
    if unknown:
        report.fail(where, f"unknown field(s) in {what}: {sorted(unknown)}")


def _check_endpoints(report: Report, where: str, endpoints: Any, key: str) -> None:
    if not isinstance(endpoints, list) or not endpoints:
        report.fail(where, f"spec.{key} must be a non-empty list")
        return
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict) or not (
            endpoint.get("port") or endpoint.get("targetPort")
        ):
            report.fail(where, f"spec.{key}[{i}] needs a port")


SELECTOR_KEYS = {"matchLabels", "matchExpressions"}


def check_service_monitor(report: Report, where: str, m: Manifest) -> None:
    spec = _require(report, where, m, "spec", dict)
    if spec is None:
        return
    selector = _require(report, where, m, "spec.selector", dict)
    if selector is not None:
        _only_keys(report, where, selector, SELECTOR_KEYS, "spec.selector")
    _check_endpoints(report, where, spec.get("endpoints"), "endpoints")


def check_pod_monitor(report: Report, where: str, m: Manifest) -> None:
    spec = _require(report, where, m, "spec", dict)
    if spec is None:
        return
    selector = _require(report, where, m, "spec.selector", dict)
    if selector is not None:
        _only_keys(report, where, selector, SELECTOR_KEYS, "spec.selector")
    _check_endpoints(report, where, spec.get("podMetricsEndpoints"), "podMetricsEndpoints")


def check_probe(report: Report, where: str, m: Manifest) -> None:
    _require(report, where, m, "spec.prober.url", str)
    static = _require(report, where, m, "spec.targets.staticConfig.static", list)
    if static is not None and not all(isinstance(t, str) and t for t in static):
        report.fail(where, "spec.targets.staticConfig.static must list non-empty strings")


def check_prometheus_rule(report: Report, where: str, m: Manifest) -> None:
    groups = _require(report, where, m, "spec.groups", list)
    if not groups:
        report.fail(where, "spec.groups is empty")
        return
    for g, group in enumerate(groups):
        rules = group.get("rules") if isinstance(group, dict) else None
        if not isinstance(group, dict) or not group.get("name") or not isinstance(rules, list):
            report.fail(where, f"spec.groups[{g}] needs a name and a rules list")
            continue
        for r, rule in enumerate(rules):
            if not isinstance(rule, dict) or not rule.get("expr"):
                report.fail(where, f"spec.groups[{g}].rules[{r}] has no expr")
            elif bool(rule.get("alert")) == bool(rule.get("record")):
                report.fail(where, f"spec.groups[{g}].rules[{r}] needs exactly one of alert/record")
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump({"groups": groups}, handle)
        rules_file = handle.name
    try:
        result = subprocess.run(
            [promtool, "check", "rules", rules_file], capture_output=True, text=True, check=False
        )
    finally:
        Path(rules_file).unlink()
    if result.returncode != 0:
        report.fail(where, "promtool check rules: " + (result.stdout + result.stderr).strip())


def check_certificate(report: Report, where: str, m: Manifest) -> None:
    _require(report, where, m, "spec.secretName", str)
    _require(report, where, m, "spec.issuerRef.name", str)
    # cert-manager's own rule: at least one identity (a CA has a commonName, no dnsNames)
    spec = m.get("spec") or {}
    identities = ("commonName", "dnsNames", "uris", "emailAddresses", "ipAddresses", "otherNames")
    if not any(spec.get(key) for key in identities):
        report.fail(where, f"spec names no identity (one of {', '.join(identities)})")


def check_issuer(report: Report, where: str, m: Manifest) -> None:
    spec = _require(report, where, m, "spec", dict)
    if spec is not None and not ({"acme", "ca", "selfSigned", "vault", "venafi"} & set(spec)):
        report.fail(where, "spec needs one issuer type (acme, ca, selfSigned, vault, venafi)")


def check_gateway(report: Report, where: str, m: Manifest) -> None:
    _require(report, where, m, "spec.gatewayClassName", str)
    listeners = _require(report, where, m, "spec.listeners", list) or []
    names = [listener.get("name") for listener in listeners if isinstance(listener, dict)]
    if not listeners or len(set(names)) != len(names):
        report.fail(where, "spec.listeners must be a non-empty list of uniquely named listeners")
    for listener in listeners:
        if isinstance(listener, dict) and listener.get("protocol") == "HTTPS":
            refs = (listener.get("tls") or {}).get("certificateRefs")
            if not refs:
                report.fail(where, f"HTTPS listener {listener.get('name')} has no certificateRefs")


def check_route(report: Report, where: str, m: Manifest) -> None:
    parents = _require(report, where, m, "spec.parentRefs", list)
    if parents is not None and not parents:
        report.fail(where, "spec.parentRefs is empty: the route attaches to nothing")
    for i, rule in enumerate((m.get("spec") or {}).get("rules") or []):
        # Answered by the proxy itself: a redirect, or an Envoy Gateway direct response.
        answers = {"RequestRedirect", "ExtensionRef"} & {
            f.get("type") for f in rule.get("filters") or []
        }
        if bool(answers) == bool(rule.get("backendRefs")):
            report.fail(
                where,
                f"spec.rules[{i}] needs backendRefs or an answer of the proxy's own "
                "(RequestRedirect, ExtensionRef), not both",
            )


def check_route_filter(report: Report, where: str, m: Manifest) -> None:
    spec = _require(report, where, m, "spec", dict)
    if spec is not None and not spec:
        report.fail(where, "spec is empty: the filter does nothing")


def check_envoy_policy(report: Report, where: str, m: Manifest) -> None:
    refs = _require(report, where, m, "spec.targetRefs", list)
    if refs is not None and not refs:
        report.fail(where, "spec.targetRefs is empty: the policy applies to nothing")


CRD_CHECKS: dict[tuple[str, str], Callable[[Report, str, Manifest], None]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
    ("monitoring.coreos.com/v1", "Probe"): check_probe,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
    ("cert-manager.io/v1", "Issuer"): check_issuer,
    ("cert-manager.io/v1", "ClusterIssuer"): check_issuer,
    ("gateway.networking.k8s.io/v1", "Gateway"): check_gateway,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): check_route,
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"): check_envoy_policy,
    ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy"): check_envoy_policy,
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): check_envoy_policy,
    ("gateway.envoyproxy.io/v1alpha1", "HTTPRouteFilter"): check_route_filter,
}

# Groups whose objects are validated against their CRD's schema or not at all: their CRDs
# are the only precise statement of their fields.
SCHEMA_REQUIRED = frozenset({"gateway.networking.k8s.io", "gateway.envoyproxy.io"})


# --- CRD schemas ------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema, strict: an object with declared properties
    admits no other field unless x-kubernetes-preserve-unknown-fields says so."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    return out


def load_crd_schemas(directories: list[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON Schema, from every CRD file of the directories."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    # metadata is the API server's to check (kubernetes-validate's ObjectMeta)
                    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


# The CRD sets scripts/bootstrap-kube.sh copies, by the variable holding each one's version
# (scripts/kube-up.sh installs the same sets).
BOOTSTRAP_CRD_SETS = {
    "prometheus-operator": "PROMETHEUS_OPERATOR_VERSION",
    "gateway-api": "GATEWAY_API_VERSION",
    "envoy-gateway": "ENVOY_GATEWAY_VERSION",
    "cert-manager": "CERT_MANAGER_VERSION",
}


def bootstrap_crd_dirs(project_root: Path) -> list[Path]:
    """The CRD directories of scripts/bootstrap-kube.sh (copied from the Go module zips
    on first use, a stamp check afterwards)."""
    script = project_root / "scripts" / "bootstrap-kube.sh"
    result = subprocess.run(
        [str(script), "crds"], cwd=project_root, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"scripts/bootstrap-kube.sh crds failed:\n{result.stderr}")
    crd_root = Path(result.stdout.strip().splitlines()[-1]).parent / "crds"
    text = script.read_text()
    dirs = []
    for name, variable in BOOTSTRAP_CRD_SETS.items():
        (version,) = [
            line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{variable}=")
        ]
        directory = crd_root / f"{name}-v{version}"
        if not (directory / ".complete").is_file():
            raise SystemExit(f"{directory}: not copied by scripts/bootstrap-kube.sh crds")
        dirs.append(directory)
    return dirs


def check_against_crd(report: Report, where: str, m: Manifest, schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(m), key=lambda e: list(e.absolute_path)):
        dotted = ".".join(str(p) for p in error.absolute_path)
        report.fail(where, f"CRD schema: {dotted or '(root)'}: {error.message}")


# --- all of it --------------------------------------------------------------------------------


def validate_directory(
    directory: Path, kubernetes_version: str, crd_dirs: list[Path] | None = None
) -> Report:
    report = Report()
    schemas = load_crd_schemas(crd_dirs or [])
    for path, manifest in load_manifests(directory):
        kind = str(manifest.get("kind", "?"))
        api_version = str(manifest.get("apiVersion", "?"))
        name = (manifest.get("metadata") or {}).get("name", "?")
        where = f"{path} ({api_version} {kind} {name})"
        report.checked += 1
        report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
        if not isinstance(manifest.get("metadata"), dict) or not manifest["metadata"].get("name"):
            report.fail(where, "no metadata.name")
        try:
            kv.validate(manifest, kubernetes_version, strict=True)
            report.builtin += 1
            continue
        except kv.ValidationError as error:
            dotted = ".".join(str(p) for p in error.path)
            report.fail(
                where, f"kubernetes-validate (strict, {error.version}): {dotted}: {error.message}"
            )
            continue
        except kv.SchemaNotFoundError:
            pass
        except kv.VersionNotSupportedError:
            raise SystemExit(
                f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version}"
            ) from None
        check = CRD_CHECKS.get((api_version, kind))
        if check is None:
            report.fail(
                where,
                "custom kind with no schema and no explicit check in manifest_check.CRD_CHECKS",
            )
            continue
        report.custom += 1
        check(report, where, manifest)
        schema = schemas.get((api_version, kind))
        if schema is not None:
            report.schema_checked += 1
            check_against_crd(report, where, manifest, schema)
        elif api_version.split("/", maxsplit=1)[0] in SCHEMA_REQUIRED:
            report.fail(where, "no CRD schema for this kind (pass --crds with its CRD files)")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument(
        "--crds", type=Path, action="append", default=[], help="a directory of CRD files"
    )
    parser.add_argument(
        "--bootstrap-crds",
        action="store_true",
        help="also every CRD set of scripts/bootstrap-kube.sh crds (run for it)",
    )
    args = parser.parse_args(argv)
    if args.bootstrap_crds:
        args.crds += bootstrap_crd_dirs(Path(__file__).resolve().parents[2])
    if not args.directory.is_dir():
        print(f"manifest_check: {args.directory} does not exist", file=sys.stderr)
        return 2
    for crd_dir in args.crds:
        if not crd_dir.is_dir():
            print(f"manifest_check: {crd_dir} does not exist", file=sys.stderr)
            return 2
    report = validate_directory(args.directory, args.kubernetes_version, args.crds)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.by_kind.items()))
    promtool = "yes" if shutil.which("promtool") else "not installed"
    print(
        f"{args.directory}: {report.checked} manifests, {report.builtin} built-in validated "
        f"strictly against Kubernetes {args.kubernetes_version}, {report.custom} custom "
        f"resources checked explicitly (promtool: {promtool}), {report.schema_checked} of "
        f"them against their CRD's schema; {kinds}"
    )
    for error in report.errors:
        print(f"ERROR {error}", file=sys.stderr)
    if report.checked == 0:
        print(f"ERROR {args.directory}: no manifests", file=sys.stderr)
        return 1
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
