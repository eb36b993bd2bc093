"""Runs the real program under Pulumi mocks and records every resource it declares.

Each recorded resource carries its resolved inputs, so tests reason about the manifests
the program would send, not about the Python that builds them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor

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
    # Resource options as the engine receives them (RecordingMonitor).
    protect: bool = False
    retain_on_delete: bool = False
    # The URNs the engine is told this resource waits for (its inputs' resources, dependsOn).
    dependencies: list[str] = field(default_factory=list)

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
        # (type, name) -> (protect, retainOnDelete), filled by RecordingMonitor.
        self.options: dict[tuple[str, str], tuple[bool, bool]] = {}
        self.dependencies: dict[tuple[str, str], list[str]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs)))
        outputs = dict(args.inputs)
        # Like pulumi-random, which replaces a resource whose keepers change: a new value for
        # every distinct set of keepers, the same one for the same keepers.
        keepers = args.inputs.get("keepers")
        seed = args.name + (json.dumps(keepers, sort_keys=True) if keepers else "")
        digest = hashlib.sha256(seed.encode()).hexdigest()
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"pw-{digest[:32]}"
        if args.typ == "random:index/randomId:RandomId":
            outputs["hex"] = digest[: 2 * int(args.inputs.get("byteLength", 16))]
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


class RecordingMonitor(MockMonitor):
    """The mock engine, noting the options each resource is registered with: the request is
    what the real engine would receive (`Mocks.new_resource` is not given the options)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:
        protect = request.HasField("protect") and request.protect
        retain = request.HasField("retainOnDelete") and request.retainOnDelete
        self.recording.options[(request.type, request.name)] = (protect, retain)
        self.recording.dependencies[(request.type, request.name)] = list(request.dependencies)
        return super().RegisterResource(request)


@dataclass
class StackRun:
    """What one evaluation of the program declared, exported and logged."""

    resources: list[Recorded]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    warnings: list[str]


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def raw_stack(stack: str) -> dict[str, Any]:
    """The stack file's `onboarding:` settings, keyed without the namespace."""
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in config.items()}


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The `config:` of Pulumi.<stack>.yaml, as the engine hands it to the program."""
    raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw.update(overrides or {})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def run_stack(
    stack: str, overrides: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None
) -> StackRun:
    """Evaluate infra/__main__.py for a stack under mocks, `secrets` given as secret config
    (as `pulumi config set --secret` would); return what it declared and exported."""
    mocks = RecordingMocks()
    warnings = _Warnings()
    logger = logging.getLogger(f"pulumi-mocks-{stack}")
    logger.addHandler(warnings)
    # A root stack of its own (set_mocks keeps an existing one): no run sees another's exports.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks,
        project=PROJECT,
        stack=stack,
        preview=False,
        logger=logger,
        monitor=RecordingMonitor(mocks),
    )
    config = stack_config(stack, {**(overrides or {}), **(secrets or {})})
    pulumi.runtime.set_all_config(config, list(secrets or {}))
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def collect(exported: dict[str, Any]) -> None:
        for name, value in exported.items():
            output = pulumi.Output.from_input(value)
            outputs[name] = await output.future()
            if await output.is_secret():
                secret_outputs.add(name)

    @pulumi.runtime.test
    def program() -> Any:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
        root = pulumi.runtime.get_root_resource()
        return asyncio.ensure_future(collect(dict(getattr(root, "outputs", {}))))

    try:
        program()
    finally:
        logger.removeHandler(warnings)
    for recorded in mocks.resources:
        recorded.protect, recorded.retain_on_delete = mocks.options[(recorded.type, recorded.name)]
        recorded.dependencies = mocks.dependencies.get((recorded.type, recorded.name), [])
    return StackRun(mocks.resources, outputs, secret_outputs, warnings.messages)


def run_program(stack: str, overrides: dict[str, Any] | None = None) -> list[Recorded]:
    """Evaluate infra/__main__.py for a stack under mocks; return what it declared."""
    return run_stack(stack, overrides).resources


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
