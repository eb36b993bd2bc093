"""What the supervision of one environment needs to know about it.

Plain data shared by the alerting rules, the dashboards and the SLA report, so that the
three always select the same series. No Pulumi, no I/O: the monitoring component builds
one from the stack settings; the export script and the report use `default_context`.
"""

from __future__ import annotations

from dataclasses import dataclass

ENVIRONMENTS = ("prod", "preprod")

# Where the stack configs publish the site; `Pulumi.<env>.yaml`, key `ingress.host`.
_PUBLIC_HOSTS = {
    "prod": "ouverture-compte.banque.example.fr",
    "preprod": "preprod.ouverture-compte.banque.example.fr",
}
_COUCHDB_REPLICAS = {"prod": 5, "preprod": 3}
RUNBOOK_BASE_URL = "https://git.hebergeur.example.fr/onboarding/platform/-/blob/main/runbooks"


@dataclass(frozen=True)
class MonitoringContext:
    """The labels, names and thresholds that tie the supervision to one environment."""

    environment: str
    namespace: str
    # Prometheus `job` label of the CouchDB scrape (the ServiceMonitor's jobLabel).
    couchdb_job: str
    # Expected cluster size: every node must be up and a member of every other's view.
    couchdb_replicas: int
    webapp_job: str
    # `job` label of the blackbox Probe; its `instance` label is the probed URL.
    probe_job: str
    public_url: str
    runbook_base_url: str
    slo_target: float = 0.999
    purge_max_age_hours: int = 26
    backup_max_age_hours: int = 26
    # Job label the Pushgateway's series keep (scraped with honor_labels).
    ops_job: str = "couchops"
    # CronJob names, the fallback source of "last success" when the Pushgateway lost its
    # series (restart without persistence): components/ops_job.py names them.
    purge_cronjob: str = "couchops-purge"
    backup_cronjob: str = "couchops-backup"
    # The web app's own instrumentation (Prometheus client conventions).
    webapp_requests_metric: str = "http_requests_total"
    webapp_status_label: str = "code"
    webapp_duration_histogram: str = "http_request_duration_seconds"
    webapp_latency_p95_seconds: float = 1.0
    couchdb_latency_p95_seconds: float = 1.0
    # A ratio of 5xx answers above which users notice, and the request rate below which a
    # ratio means nothing (a handful of requests in five minutes).
    error_ratio_threshold: float = 0.05
    min_request_rate: float = 0.1
    cert_ticket_days: int = 21
    cert_page_days: int = 7

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ValueError(
                f"environment '{self.environment}' is unknown (allowed: {', '.join(ENVIRONMENTS)})"
            )
        if not 0.0 < self.slo_target < 1.0:
            raise ValueError(f"slo_target {self.slo_target} is outside (0, 1), e.g. 0.999")
        if self.couchdb_replicas < 1:
            raise ValueError(f"couchdb_replicas {self.couchdb_replicas} must be at least 1")
        if not self.public_url.startswith("https://"):
            raise ValueError(f"public_url '{self.public_url}' must be an https:// URL")
        if self.runbook_base_url.endswith("/"):
            raise ValueError(f"runbook_base_url '{self.runbook_base_url}' must not end with '/'")
        for name in ("purge_max_age_hours", "backup_max_age_hours"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 hour")
        if not 0 < self.cert_page_days < self.cert_ticket_days:
            raise ValueError("cert_page_days must be positive and below cert_ticket_days")

    @property
    def error_budget_ratio(self) -> float:
        """The share of time the SLO lets the site be unavailable (0.001 for 99.9%)."""
        return round(1.0 - self.slo_target, 12)

    def runbook_url(self, alert: str) -> str:
        return f"{self.runbook_base_url}/{alert}.md"


def default_context(environment: str) -> MonitoringContext:
    """The context the stacks build for `environment` (same names as the components)."""
    if environment not in ENVIRONMENTS:
        raise ValueError(
            f"environment '{environment}' is unknown (allowed: {', '.join(ENVIRONMENTS)})"
        )
    return MonitoringContext(
        environment=environment,
        namespace=f"onboarding-{environment}",
        couchdb_job="couchdb",
        couchdb_replicas=_COUCHDB_REPLICAS[environment],
        webapp_job="webapp",
        probe_job="blackbox",
        public_url=f"https://{_PUBLIC_HOSTS[environment]}/",
        runbook_base_url=RUNBOOK_BASE_URL,
    )
