"""The one place that reads the stack config.

Everything the program needs comes from the `onboarding:` namespace of the stack file,
validated once by `infra.settings`. Secrets are generated (pulumi-random) by the components
and kept in the encrypted state; the one exception is `restoredKeys`, keys taken back from
the key escrow after a lost state (runbooks/state-safety.md), which must be a secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config

from infra.settings import SECRET_SETTINGS, Settings, SettingsError, parse_settings

NAMESPACE = "onboarding"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _raw_config() -> dict[str, Any]:
    # Pulumi's Config API only answers for keys one asks about; listing every key of the
    # namespace is what lets a misspelt top-level key fail instead of being ignored.
    values: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace != NAMESPACE:
            continue
        secret = full_key in secret_keys or runtime_config.is_config_secret(full_key)
        if secret and key not in SECRET_SETTINGS:
            raise SettingsError(
                f"{full_key}: is a secret, but this program takes no secret from stack "
                "config but restoredKeys (secrets are generated and kept in the encrypted state)"
            )
        if key in SECRET_SETTINGS and not secret:
            raise SettingsError(
                f"{full_key}: holds keys but is stored in plain text (allowed: a secret, "
                f"set with `pulumi config set --secret {full_key}`)"
            )
        raw[key] = _decode(value)
    return raw


def _decode(value: Any) -> Any:
    # Structured values reach the program as JSON text.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def load_settings() -> Settings:
    """Validated settings of the selected stack; stops the program with one clear message."""
    try:
        return parse_settings(_raw_config(), NAMESPACE)
    except SettingsError as error:
        raise pulumi.RunError(str(error)) from None


# The passphrase scripts/pulumi-env.sh gives a local state in render mode. It is public (it
# is in this repository), so it protects nothing: never a deploy's.
PUBLIC_DEV_PASSPHRASE = "onboarding-local-dev-only-not-a-secret"  # noqa: S105 (public on purpose)


class DeployRefused(pulumi.RunError):
    """A deploy that the safe defaults refuse; the message says what to set."""


@dataclass(frozen=True)
class DeployTarget:
    """Where resources go: a live cluster (a kubeconfig and the context named in the stack
    config), or manifests rendered into a folder."""

    kubeconfig: str | None
    render_directory: str | None
    context: str | None = None


def _kubeconfig_path() -> str | None:
    candidates = [*os.environ.get("KUBECONFIG", "").split(os.pathsep), "~/.kube/config"]
    return next(
        (str(Path(c).expanduser()) for c in candidates if c and Path(c).expanduser().is_file()),
        None,
    )


def render_mode() -> bool:
    """True when nothing is deployed: ONBOARDING_RENDER=1, or no kubeconfig (KUBECONFIG or
    ~/.kube/config). scripts/pulumi-env.sh (onboarding_render_mode) decides the same way."""
    return os.environ.get("ONBOARDING_RENDER", "") == "1" or _kubeconfig_path() is None


def kubeconfig_contexts(kubeconfig: str) -> list[str]:
    """The context names a kubeconfig file defines."""
    try:
        loaded = yaml.safe_load(Path(kubeconfig).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DeployRefused(f"cannot read the kubeconfig {kubeconfig}: {error}") from None
    contexts = loaded.get("contexts") if isinstance(loaded, dict) else None
    return [c["name"] for c in contexts or [] if isinstance(c, dict) and "name" in c]


def _passphrase_in_use() -> str | None:
    if "PULUMI_CONFIG_PASSPHRASE" in os.environ:
        return os.environ["PULUMI_CONFIG_PASSPHRASE"]
    path = os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if path:
        try:
            return Path(path).read_text().strip()  # as the CLI reads it (TrimSpace)
        except OSError:
            return None
    return None


def deploy_target(stack: str, kube_context: str | None = None) -> DeployTarget:
    """A cluster when a kubeconfig is present (KUBECONFIG or ~/.kube/config), otherwise
    render mode: every manifest written under `rendered/<stack>/`, no cluster contacted.
    ONBOARDING_RENDER=1 forces render mode even where a kubeconfig exists.

    A deploy is refused (DeployRefused, naming what to set) when the state's secrets would be
    encrypted with the public development passphrase, when the stack config names no
    `onboarding:kubeContext`, or when the kubeconfig has no context of that name. The
    provider is given that context explicitly: the kubeconfig's current-context, whatever it
    is, is never used."""
    kubeconfig = _kubeconfig_path()
    if render_mode() or kubeconfig is None:
        return DeployTarget(
            kubeconfig=None, render_directory=str(PROJECT_ROOT / "rendered" / stack)
        )
    if _passphrase_in_use() == PUBLIC_DEV_PASSPHRASE:
        raise DeployRefused(
            "refusing to deploy: the state's secrets are encrypted with the public development "
            "passphrase (it is in this repository). Set PULUMI_CONFIG_PASSPHRASE_FILE (or "
            "PULUMI_CONFIG_PASSPHRASE) from the team's secret store, or use a KMS secrets "
            "provider (docs/state-backend.md); for render mode, set ONBOARDING_RENDER=1"
        )
    if not kube_context:
        raise DeployRefused(
            f"refusing to deploy: stack {stack} names no kube context. Set "
            f"onboarding:kubeContext in Pulumi.{stack}.yaml to the kubeconfig context of "
            f"{stack}'s cluster (contexts in {kubeconfig}: "
            f"{', '.join(kubeconfig_contexts(kubeconfig)) or 'none'}); for render mode, set "
            "ONBOARDING_RENDER=1"
        )
    contexts = kubeconfig_contexts(kubeconfig)
    if kube_context not in contexts:
        raise DeployRefused(
            f"refusing to deploy: onboarding:kubeContext is {kube_context!r} but the kubeconfig "
            f"{kubeconfig} has no such context (it has: {', '.join(contexts) or 'none'}). Use the "
            f"kubeconfig of {stack}'s cluster (KUBECONFIG), or correct onboarding:kubeContext"
        )
    return DeployTarget(kubeconfig=kubeconfig, render_directory=None, context=kube_context)
