"""What the supervision of one environment needs to know about it.

Plain data shared by the alerting rules, the dashboards and the SLA report, so that the
three always select the same series. No Pulumi, no I/O: the monitoring component builds
one from the stack settings; the export script and the report use `default_context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.settings import MAX_RETENTION_DAYS

# No personal data older than this may be readable in any copy, backups included; the one
# constant the settings, the purge and the backups obey.
GDPR_MAX_AGE_DAYS = MAX_RETENTION_DAYS

ENVIRONMENTS = ("prod", "preprod")

# Where the stack configs publish the site; `Pulumi.<env>.yaml`, key `ingress.host`.
_PUBLIC_HOSTS = {
    "prod": "ouverture-compte.banque.example.fr",
    "preprod": "preprod.ouverture-compte.banque.example.fr",
}
_COUCHDB_REPLICAS = {"prod": 5, "preprod": 3}
RUNBOOK_BASE_URL = "https://git.hebergeur.example.fr/onboarding/platform/-/blob/main/runbooks"


@dataclass(frozen=True)
class Retention:
    """How long personal data may live and how late the purge removing it may be: the
    stack's `gdpr.maxAgeDays`, `purge.retentionDays` and `purge.deadlineHours`, and the
    longest gap between two purge starts in the CronJobs' time zone (hours, rounded up)."""

    budget_days: int = GDPR_MAX_AGE_DAYS
    # Daily at 03:30 Europe/Paris: starts are 25 h apart the night the clocks go back, and
    # a run (the audit after it included) may last up to its deadline. Each run removes
    # data older than the retention; the budget leaves the difference for a late purge.
    purge_retention_days: int = 28
    purge_longest_gap_hours: int = 25
    purge_deadline_hours: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.budget_days <= GDPR_MAX_AGE_DAYS:
            raise ValueError(f"budget_days {self.budget_days} is outside 1..{GDPR_MAX_AGE_DAYS}")
        if not 1 <= self.purge_retention_days <= self.budget_days:
            raise ValueError(
                f"purge_retention_days {self.purge_retention_days} is outside "
                f"1..{self.budget_days} (the budget)"
            )
        if self.purge_longest_gap_hours < 1 or self.purge_deadline_hours < 1:
            raise ValueError("purge_longest_gap_hours and purge_deadline_hours must be >= 1")


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
    retention: Retention = field(default_factory=Retention)
    # Two successful purges (or audits) can end 25 + 6 = 31 h apart with nothing wrong (a
    # quick run, then a slow one on the DST day), so the page waits 32 h. It still comes
    # inside the budget: the last success started at most 6 h before it ended and removed
    # everything older than 28 days then, so when the page fires the oldest readable data
    # is at most 28 d + 6 h + 32 h = 29 d 14 h old, 10 h before any passes 30 days
    # (`purge_page_margin_hours`, checked in __post_init__).
    purge_max_age_hours: int = 32
    backup_max_age_hours: int = 26
    # `couchops backup-expire` runs hourly; one failed or late run is a ticket, and the page
    # waits for the second missed run (3 h) so that a pod slow to start does not page.
    backup_expire_max_age_hours: int = 3
    # Job label the Pushgateway's series keep (scraped with honor_labels).
    ops_job: str = "couchops"
    # CronJob names, the fallback source of "last success" when the Pushgateway lost its
    # series (restart without persistence): components/ops_job.py names them.
    purge_cronjob: str = "couchops-purge"
    backup_cronjob: str = "couchops-backup"
    backup_expire_cronjob: str = "couchops-backup-expire"
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
        for name in ("purge_max_age_hours", "backup_max_age_hours", "backup_expire_max_age_hours"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 hour")
        self._check_purge_thresholds()
        if not 0 < self.cert_page_days < self.cert_ticket_days:
            raise ValueError("cert_page_days must be positive and below cert_ticket_days")

    def _check_purge_thresholds(self) -> None:
        r = self.retention
        normal = r.purge_longest_gap_hours + r.purge_deadline_hours
        if self.purge_max_age_hours <= normal:
            raise ValueError(
                f"purge_max_age_hours {self.purge_max_age_hours} would page on a normal day: "
                f"two successes can be {normal} h apart (longest gap between starts "
                f"{r.purge_longest_gap_hours} h + a run of up to {r.purge_deadline_hours} h)"
            )
        if self.purge_page_margin_hours <= 0:
            raise ValueError(
                f"purge_max_age_hours {self.purge_max_age_hours} pages too late: with a "
                f"{r.purge_retention_days}-day retention and runs of up to "
                f"{r.purge_deadline_hours} h, data may be older than {r.budget_days} days "
                f"before it fires"
            )

    @property
    def purge_page_margin_hours(self) -> int:
        """Hours left, when GDPRPurgeStale fires, before any data can outlive the budget."""
        r = self.retention
        worst = r.purge_retention_days * 24 + r.purge_deadline_hours + self.purge_max_age_hours
        return r.budget_days * 24 - worst

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
