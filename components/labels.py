"""Names and labels shared by every component: the one place they are spelled."""

from __future__ import annotations

PART_OF = "onboarding-platform"
MANAGED_BY = "pulumi"

# Prefix of the project's own label keys and annotations.
DOMAIN = "onboarding.example.fr"

# Carried by every pod allowed to open a connection to CouchDB's HTTP port; the CouchDB
# NetworkPolicy admits exactly these pods.
COUCHDB_CLIENT_LABEL = f"{DOMAIN}/couchdb-client"

# Carried by every job pod that pushes its outcome to the Pushgateway.
PUSHES_METRICS_LABEL = f"{DOMAIN}/pushes-metrics"


def selector_labels(name: str, environment: str) -> dict[str, str]:
    """The immutable subset used in selectors (a Deployment's selector can never change)."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": f"{name}-{environment}",
    }


def standard_labels(
    name: str, environment: str, component: str, version: str | None = None
) -> dict[str, str]:
    """The Kubernetes recommended `app.kubernetes.io/*` set, plus the environment."""
    labels = {
        **selector_labels(name, environment),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"{DOMAIN}/environment": environment,
    }
    if version:
        labels["app.kubernetes.io/version"] = image_version(version)
    return labels


def image_version(image: str) -> str:
    """A label-safe version from an image reference: its tag, or the digest's first 12 hex."""
    if "@sha256:" in image:
        return image.rsplit("@sha256:", 1)[1][:12]
    tail = image.rsplit("/", 1)[-1]
    return tail.rsplit(":", 1)[1][:63] if ":" in tail else "unknown"
