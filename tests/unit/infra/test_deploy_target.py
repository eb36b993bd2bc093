"""Render mode or deploy mode, and the deploy refusals (infra/config.py: deploy_target)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.config import PUBLIC_DEV_PASSPHRASE, DeployRefused, deploy_target


def kubeconfig(path: Path, *contexts: str, current: str | None = None) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current or (contexts[0] if contexts else ""),
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [
                    {"name": n, "context": {"cluster": "c", "user": "u"}} for n in contexts
                ],
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [
        "KUBECONFIG",
        "ONBOARDING_RENDER",
        "PULUMI_CONFIG_PASSPHRASE",
        "PULUMI_CONFIG_PASSPHRASE_FILE",
    ]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config


def test_no_kubeconfig_is_render_mode_whatever_the_passphrase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PUBLIC_DEV_PASSPHRASE)
    target = deploy_target("prod", None)
    assert target.kubeconfig is None and target.context is None
    assert target.render_directory is not None and target.render_directory.endswith("rendered/prod")


def test_onboarding_render_forces_render_mode_beside_a_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "k", "other")))
    monkeypatch.setenv("ONBOARDING_RENDER", "1")
    assert deploy_target("prod", None).render_directory is not None


def test_a_deploy_goes_to_the_named_context_not_the_current_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = kubeconfig(tmp_path / "k", "laptop", "onboarding-prod", current="laptop")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{path}")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-the-secret-store")
    target = deploy_target("prod", "onboarding-prod")
    assert (target.kubeconfig, target.context, target.render_directory) == (
        str(path),
        "onboarding-prod",
        None,
    )


def test_a_deploy_with_the_public_passphrase_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "k", "onboarding-prod")))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PUBLIC_DEV_PASSPHRASE)
    with pytest.raises(DeployRefused, match=r"public development passphrase.*PASSPHRASE_FILE"):
        deploy_target("prod", "onboarding-prod")


def test_the_public_passphrase_is_refused_from_a_file_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "k", "onboarding-prod")))
    (tmp_path / "pass").write_text(f"  {PUBLIC_DEV_PASSPHRASE} \n")  # the CLI trims it
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(tmp_path / "pass"))
    with pytest.raises(DeployRefused, match="public development passphrase"):
        deploy_target("prod", "onboarding-prod")


def test_a_deploy_without_a_kube_context_in_the_stack_config_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "k", "laptop")))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-the-secret-store")
    with pytest.raises(
        DeployRefused, match=r"names no kube context.*onboarding:kubeContext.*laptop"
    ):
        deploy_target("preprod", None)


def test_a_deploy_to_a_kubeconfig_without_the_named_context_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "k", "laptop", "onboarding-prod")))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-the-secret-store")
    with pytest.raises(DeployRefused, match=r"'onboarding-preprod'.*no such context.*laptop"):
        deploy_target("preprod", "onboarding-preprod")


def test_the_home_kubeconfig_counts_as_a_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    kubeconfig(tmp_path / "home" / ".kube" / "config", "laptop")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-the-secret-store")
    with pytest.raises(DeployRefused, match="no such context"):
        deploy_target("prod", "onboarding-prod")
