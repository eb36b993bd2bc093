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

    python tests/integration/manifest_check.py rendered/prod --kubernetes-version 1.34.2
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

import yaml
from kubernetes_validate import utils as kv

Manifest = dict[str, Any]


@dataclass
class Report:
    checked: int = 0
    builtin: int = 0
    custom: int = 0
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
    names = _require(report, where, m, "spec.dnsNames", list)
    if names is not None and not names:
        report.fail(where, "spec.dnsNames is empty")


def check_issuer(report: Report, where: str, m: Manifest) -> None:
    spec = _require(report, where, m, "spec", dict)
    if spec is not None and not ({"acme", "ca", "selfSigned", "vault", "venafi"} & set(spec)):
        report.fail(where, "spec needs one issuer type (acme, ca, selfSigned, vault, venafi)")


CRD_CHECKS: dict[tuple[str, str], Callable[[Report, str, Manifest], None]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
    ("monitoring.coreos.com/v1", "Probe"): check_probe,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
    ("cert-manager.io/v1", "Issuer"): check_issuer,
    ("cert-manager.io/v1", "ClusterIssuer"): check_issuer,
}


# --- all of it --------------------------------------------------------------------------------


def validate_directory(directory: Path, kubernetes_version: str) -> Report:
    report = Report()
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
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--kubernetes-version", required=True)
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"manifest_check: {args.directory} does not exist", file=sys.stderr)
        return 2
    report = validate_directory(args.directory, args.kubernetes_version)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.by_kind.items()))
    promtool = "yes" if shutil.which("promtool") else "not installed"
    print(
        f"{args.directory}: {report.checked} manifests, {report.builtin} built-in validated "
        f"strictly against Kubernetes {args.kubernetes_version}, {report.custom} custom "
        f"resources checked explicitly (promtool: {promtool}); {kinds}"
    )
    for error in report.errors:
        print(f"ERROR {error}", file=sys.stderr)
    if report.checked == 0:
        print(f"ERROR {args.directory}: no manifests", file=sys.stderr)
        return 1
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
