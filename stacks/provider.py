"""The Kubernetes provider every resource of a stack is created with."""

from __future__ import annotations

import pulumi_kubernetes as k8s

from infra.config import DeployTarget


def kubernetes_provider(stack: str, target: DeployTarget) -> k8s.Provider:
    if target.render_directory is not None:
        return k8s.Provider(
            f"{stack}-render",
            render_yaml_to_directory=target.render_directory,
            enable_server_side_apply=True,
        )
    return k8s.Provider(
        f"{stack}-cluster",
        kubeconfig=target.kubeconfig,
        enable_server_side_apply=True,
        # Fail the update rather than leave half-applied objects behind a timeout.
        delete_unreachable=False,
    )
