"""The Kubernetes provider every resource of a stack is created with."""

from __future__ import annotations

import pulumi_kubernetes as k8s

from infra.config import DeployTarget


def kubernetes_provider(stack: str, target: DeployTarget) -> k8s.Provider:
    # Secrets are updated in place, as kubectl would: by default the provider replaces a
    # Secret whose data changes, which the engine refuses for the protected ones (a password
    # rotation could never go through) and which, for a named Secret, deletes it before
    # creating it again. Pods see a new value when they roll (the checksum annotations).
    # ConfigMaps alike: a replaced `couchdb-config` (fixed name, so deleted first) would
    # drag the protected StatefulSet mounting it into a replacement the engine refuses, and
    # every change of CouchDB's ini would be refused with it.
    if target.render_directory is not None:
        return k8s.Provider(
            f"{stack}-render",
            render_yaml_to_directory=target.render_directory,
            enable_server_side_apply=True,
            enable_secret_mutable=True,
            enable_config_map_mutable=True,
        )
    return k8s.Provider(
        f"{stack}-cluster",
        kubeconfig=target.kubeconfig,
        # The context the stack config names (onboarding:kubeContext), never the kubeconfig's
        # current-context: a kubeconfig switched to another cluster cannot redirect a deploy.
        context=target.context,
        enable_server_side_apply=True,
        enable_secret_mutable=True,
        enable_config_map_mutable=True,
        # Fail the update rather than leave half-applied objects behind a timeout.
        delete_unreachable=False,
    )
