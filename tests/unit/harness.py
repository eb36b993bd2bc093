"""Runs the real program under Pulumi mocks and records every resource it declares.

Each recorded resource carries its resolved inputs, so tests reason about the manifests
the program would send, not about the Python that builds them.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "onboarding-platform"


# How the Pulumi runtime marks a secret value on the wire (sdk/python pulumi/runtime/rpc.py).
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def unwrap(value: Any, path: str = "", secrets: list[str] | None = None) -> Any:
    """The plain value, with the path of every secret-marked part appended to `secrets`."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            if secrets is not None:
                secrets.append(path)
            return unwrap(value.get("value"), path, None)
        return {k: unwrap(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


@dataclass
class Recorded:
    type: str
    name: str
    raw_inputs: dict[str, Any]
    inputs: dict[str, Any] = field(init=False)
    secret_paths: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.secret_paths = []
        self.inputs = unwrap(self.raw_inputs, "", self.secret_paths)

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1]

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.inputs.get("metadata") or {})

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.inputs.get("spec") or {})


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like a provider that accepts everything, and remembers what it was given."""

    def __init__(self) -> None:
        self.resources: list[Recorded] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs)))
        outputs = dict(args.inputs)
        digest = hashlib.sha256(args.name.encode()).hexdigest()
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"pw-{digest[:32]}"
        if args.typ == "random:index/randomId:RandomId":
            outputs["hex"] = digest[: 2 * int(args.inputs.get("byteLength", 16))]
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def raw_stack(stack: str) -> dict[str, Any]:
    """The stack file's `onboarding:` settings, keyed without the namespace."""
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in config.items()}


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The `config:` of Pulumi.<stack>.yaml, as the engine hands it to the program."""
    raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw.update(overrides or {})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def run_program(stack: str, overrides: dict[str, Any] | None = None) -> list[Recorded]:
    """Evaluate infra/__main__.py for a stack under mocks; return what it declared."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(stack_config(stack, overrides), [])

    @pulumi.runtime.test
    def program() -> None:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")

    program()
    return mocks.resources


def by_kind(resources: list[Recorded], kind: str) -> list[Recorded]:
    """Kubernetes objects of a kind (component resources of the same name excluded)."""
    return [r for r in resources if r.type.startswith("kubernetes:") and r.kind == kind]


def one(resources: list[Recorded], kind: str, name: str | None = None) -> Recorded:
    found = [r for r in by_kind(resources, kind) if name is None or r.metadata.get("name") == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates_specs(resources: list[Recorded]) -> dict[str, dict[str, Any]]:
    """The pod spec of every workload, keyed by the workload's name."""
    specs: dict[str, dict[str, Any]] = {}
    for r in resources:
        if r.kind == "CronJob":
            specs[r.metadata["name"]] = r.spec["jobTemplate"]["spec"]["template"]["spec"]
        elif r.kind in ("StatefulSet", "Deployment", "Job"):
            specs[r.metadata["name"]] = r.spec["template"]["spec"]
    return specs
