"""Supervision of the onboarding platform: alerting rules, dashboards and SLA reports.

Pure Python: `components/monitoring.py` turns these into Kubernetes resources, and the
`sla-report` command reads Prometheus. Nothing here imports Pulumi.
"""

from supervision.context import MonitoringContext, default_context

__all__ = ["MonitoringContext", "default_context"]
