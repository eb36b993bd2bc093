"""Pulumi entry point: settings in, one environment composed, outputs exported."""

import sys
from pathlib import Path

# `main: infra/` runs this file as a script; the project's packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from infra.config import deploy_target, load_settings
from stacks.environment import build_environment
from stacks.provider import kubernetes_provider

settings = load_settings()
stack = pulumi.get_stack()
provider = kubernetes_provider(stack, deploy_target(stack, settings.kube_context))
platform = build_environment(settings, pulumi.ResourceOptions(providers=[provider]))

pulumi.export("namespace", settings.namespace)
pulumi.export("publicUrl", platform.edge.url)
pulumi.export("couchdbUrl", platform.couchdb.url)
pulumi.export("couchdbNodes", platform.couchdb.node_names)
pulumi.export("couchdbAdminPassword", platform.couchdb.admin_password)
pulumi.export("setupJob", platform.couchdb.setup_job.metadata.name)
