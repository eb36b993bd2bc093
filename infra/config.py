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


@dataclass(frozen=True)
class DeployTarget:
    """Where resources go: a live cluster, or manifests rendered into a folder."""

    kubeconfig: str | None
    render_directory: str | None


def deploy_target(stack: str) -> DeployTarget:
    """A cluster when a kubeconfig is present (KUBECONFIG or ~/.kube/config), otherwise
    render mode: every manifest written under `rendered/<stack>/`, no cluster contacted.
    ONBOARDING_RENDER=1 forces render mode even where a kubeconfig exists."""
    forced = os.environ.get("ONBOARDING_RENDER", "") == "1"
    candidates = [*os.environ.get("KUBECONFIG", "").split(os.pathsep), "~/.kube/config"]
    kubeconfig = next(
        (str(Path(c).expanduser()) for c in candidates if c and Path(c).expanduser().is_file()),
        None,
    )
    if kubeconfig and not forced:
        return DeployTarget(kubeconfig=kubeconfig, render_directory=None)
    return DeployTarget(kubeconfig=None, render_directory=str(PROJECT_ROOT / "rendered" / stack))
