"""Typed, validated settings of one environment.

Pure data: nothing here imports Pulumi or touches the network, so every rule can be
tested directly. `infra/config.py` is the only place that reads the stack config and
hands the raw values to `Settings.model_validate`.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import zoneinfo
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pyrage import x25519  # type: ignore[import-untyped]

from infra.schedules import CronError, Gap, NoGap, longest_gap, parse

# Data residency is contractual: customer data never leaves French data centres. The
# allowed regions are therefore code, reviewed like code, not a stack setting that a
# one-line config change could widen. Values are the `topology.kubernetes.io/region`
# labels the hosting provider gives its French sites.
FRENCH_REGIONS: frozenset[str] = frozenset(
    {"fr-par", "fr-lyo", "fr-mrs", "fr-sbg", "fr-rbx", "fr-gra", "fr-lil", "fr-nte"}
)

# GDPR: nothing personal older than 30 days may remain readable anywhere, backups included.
# The one definition of the 30 days in the Pulumi program: `gdpr.maxAgeDays` may lower the
# budget, never raise it, and every copy's worst case is checked against that budget.
MAX_RETENTION_DAYS = 30

# A daily purge that runs every day of the year still leaves 25 hours between two runs once a
# year, when the clocks go back; more than that means a day without a purge.
PURGE_MAX_INTERVAL = timedelta(hours=25)
# couchops takes BACKUP_EXPIRY_INTERVAL_HOURS up to 24 (couchops/settings.py).
BACKUP_EXPIRY_MAX_INTERVAL_HOURS = 24

# The contract gives the project exactly this many dedicated nodes.
DEDICATED_NODE_COUNT = 5

ENVIRONMENTS = ("prod", "preprod")
Environment = Literal["prod", "preprod"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_FQDN = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_COUCHDB_DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")
_K8S_VERSION = re.compile(r"^1\.(\d+)\.(\d+)$")
# Each part of a CronJob's timeZone, as the API server checks it (pkg/apis/batch/validation).
_TIME_ZONE_PART = re.compile(r"^[A-Za-z.\-_0-9+]{1,14}$")
# repository[:port]/path:tag or ...@sha256:<64 hex>; the tag may not be `latest`.
_IMAGE = re.compile(
    r"^(?P<repo>[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)

# An age X25519 public key, as `age-keygen -y` prints it (Bech32, lower case).
_AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
# S3 bucket names (AWS's rules, which S3-compatible providers follow).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Empty, or path segments each ending with '/' (the characters S3 calls safe).
_OBJECT_PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()-]+/)*$")

# Top-level settings whose values are secrets (set with `pulumi config set --secret`): an
# error about them names the key, never the value.
SECRET_SETTINGS = frozenset({"restoredKeys"})
# The plain text of the key escrow (the stack output keyEscrow), which `restoredKeys` takes.
ESCROW_FORMAT = "onboarding-key-escrow/1"

_QUANTITY_FACTORS = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity_value(quantity: str) -> float:
    """The numeric value of a Kubernetes quantity ("500m" -> 0.5, "1Gi" -> 1073741824)."""
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValueError(
            f"'{quantity}' is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 20Gi)"
        )
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(3)]


def _check_quantity(value: str) -> str:
    quantity_value(value)
    return value


def _check_image(value: str) -> str:
    match = _IMAGE.match(value)
    if match is None:
        raise ValueError(
            f"'{value}' is not an image reference (allowed: registry/name:tag or "
            "registry/name@sha256:<digest>)"
        )
    tag, digest = match.group("tag"), match.group("digest")
    if digest is None and tag is None:
        raise ValueError(f"image '{value}' is not pinned (allowed: an explicit tag or a digest)")
    if tag == "latest":
        raise ValueError(f"image '{value}' uses the moving tag 'latest' (allowed: a fixed tag)")
    return value


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(f"'{value}' is not a DNS-1123 label (lower case, digits, '-')")
    return value


def _check_cron(value: str) -> str:
    try:
        parse(value)
    except CronError as error:
        raise ValueError(
            f"'{value}' is not a schedule the CronJob controller accepts: {error} "
            "(allowed: 5 cron fields, e.g. '30 3 * * *')"
        ) from None
    return value


@functools.cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_time_zone(value: str) -> str:
    parts_ok = all(
        _TIME_ZONE_PART.match(part) and part not in (".", "..") and not part.startswith("-")
        for part in value.split("/")
    )
    if not parts_ok or value.lower() == "local" or value not in _known_time_zones():
        raise ValueError(
            f"'{value}' is not an IANA time zone name (allowed: e.g. Europe/Paris, as in the "
            "zone database that CronJob timeZone uses)"
        )
    return value


def _check_age_recipient(value: str) -> str:
    problem = None if _AGE_RECIPIENT.match(value) else "is not"
    if problem is None:
        try:
            x25519.Recipient.from_str(value)
        except Exception:
            problem = "has a bad checksum for"
    if problem:
        raise ValueError(
            f"'{value}' {problem} an age X25519 recipient (allowed: a public key age1... "
            "of 62 characters, as `age-keygen -y` prints it)"
        )
    return value


def _check_bucket(value: str) -> str:
    if (
        not _BUCKET.match(value)
        or ".." in value
        or _IPV4.match(value)
        or value.startswith(("xn--", "sthree-"))
        or value.endswith(("-s3alias", "--ol-s3"))
    ):
        raise ValueError(
            f"'{value}' is not an S3 bucket name (allowed: 3 to 63 of a-z, 0-9, '.', '-', "
            "starting and ending with a letter or digit, no '..', not an IP address)"
        )
    return value


def _check_endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{value}' is not a URL (allowed: https://host[:port])")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"'{value}' has a path or query (allowed: https://host[:port])")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(
            f"'{value}' is plain http (allowed: https; http only to localhost or 127.0.0.1)"
        )
    return value.rstrip("/")


def _check_french_region(value: str) -> str:
    if value not in FRENCH_REGIONS:
        raise ValueError(
            f"region '{value}' is outside France (allowed: {', '.join(sorted(FRENCH_REGIONS))})"
        )
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Quantity = Annotated[str, AfterValidator(_check_quantity)]
Image = Annotated[str, AfterValidator(_check_image)]
DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]
Cron = Annotated[str, AfterValidator(_check_cron)]
TimeZone = Annotated[str, AfterValidator(_check_time_zone)]
FrenchRegion = Annotated[str, AfterValidator(_check_french_region)]
RetentionDays = Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)]
AgeRecipient = Annotated[str, AfterValidator(_check_age_recipient)]


def _hours(length: timedelta) -> str:
    """25:00:00, 6:00:00: a duration in hours, however many."""
    seconds = int(length.total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02}:{seconds % 60:02}"


def _days(length: timedelta) -> str:
    """30 days 07:00:00: an age in days and time of day."""
    seconds = int(length.total_seconds()) % 86400
    unit = "day" if length.days == 1 else "days"
    return f"{length.days} {unit} {seconds // 3600:02}:{seconds % 3600 // 60:02}:{seconds % 60:02}"


class RuleViolation(ValueError):
    """A cross-field rule broken by one key; `key` is relative to the model that checks it."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(f"{reason}")
        self.key = key
        self.value = value


class _Model(BaseModel):
    """Stack files spell keys in camelCase; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ResourceSettings(_Model):
    """Requests and limits of one container. Memory is always limited; CPU is not, on
    purpose: a CPU limit only adds throttling latency when the node has spare cycles."""

    cpu_request: Quantity
    memory_request: Quantity
    memory_limit: Quantity
    cpu_limit: Quantity | None = None
    # Disk for logs, the writable layer and disk-backed emptyDirs: always limited.
    ephemeral_storage_request: Quantity = "64Mi"
    ephemeral_storage_limit: Quantity = "1Gi"

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Self:
        if quantity_value(self.ephemeral_storage_limit) < quantity_value(
            self.ephemeral_storage_request
        ):
            raise RuleViolation(
                "ephemeralStorageLimit",
                self.ephemeral_storage_limit,
                f"is below ephemeralStorageRequest {self.ephemeral_storage_request} "
                "(allowed: limit >= request)",
            )
        if quantity_value(self.memory_limit) < quantity_value(self.memory_request):
            raise RuleViolation(
                "memoryLimit",
                self.memory_limit,
                f"is below memoryRequest {self.memory_request} (allowed: limit >= request)",
            )
        if self.cpu_limit is not None and quantity_value(self.cpu_limit) < quantity_value(
            self.cpu_request
        ):
            raise RuleViolation(
                "cpuLimit",
                self.cpu_limit,
                f"is below cpuRequest {self.cpu_request} (allowed: limit >= request)",
            )
        return self


class NodeSettings(_Model):
    name: Annotated[str, Field(pattern=_DNS_SUBDOMAIN.pattern)]
    region: FrenchRegion
    zone: DnsLabel


class NodePoolSettings(_Model):
    """The dedicated nodes the hosting provider hands over.

    Both environments run on the same nodes. Node labels and the taint are
    cluster-scoped, shared state: exactly one stack (`managesNodes: true`) writes them,
    the other only schedules onto them, so no two stacks ever own the same field.
    """

    nodes: Annotated[list[NodeSettings], Field(min_length=3, max_length=DEDICATED_NODE_COUNT)]
    manages_nodes: bool = False

    @field_validator("nodes")
    @classmethod
    def _distinct_names(cls, nodes: list[NodeSettings]) -> list[NodeSettings]:
        names = [node.name for node in nodes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"node names repeat: {', '.join(duplicates)} (allowed: each once)")
        return nodes


class PasswordRotation(_Model):
    """Generation counters of the two generated passwords. Raising one generates a new
    password, and everything that uses it follows: the pods that read it roll, the setup Job
    sets it on the CouchDB user (runbooks/state-safety.md). Counters only ever go up: 0 is
    the password generated first, and going back to an earlier number generates yet another."""

    admin: Annotated[int, Field(ge=0)] = 0
    app: Annotated[int, Field(ge=0)] = 0


class CouchDBSettings(_Model):
    image: Image
    replicas: Annotated[int, Field(ge=1, le=DEDICATED_NODE_COUNT)]
    shards: Annotated[int, Field(ge=1, le=64)] = 2
    shard_copies: Annotated[int, Field(ge=1, le=DEDICATED_NODE_COUNT)] = 3
    database: Annotated[str, Field(pattern=_COUCHDB_DB_NAME.pattern, max_length=238)] = "onboarding"
    storage_size: Quantity
    storage_class: DnsLabel | None = None
    resources: ResourceSettings
    max_document_size_bytes: Annotated[int, Field(ge=1024, le=64 * 2**20)] = 8 * 2**20
    # Each purge leaves an entry in `_purged_infos`; the limit must exceed what one
    # purge run removes between two compactions, or indexes rebuild from scratch.
    purged_infos_limit: Annotated[int, Field(ge=1000, le=10_000_000)] = 100_000
    password_rotation: PasswordRotation = PasswordRotation()


def _check_egress_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(
            f"'{value}' is not a network in CIDR notation (examples: 203.0.113.0/24, "
            "2001:db8::/48; host bits must be zero)"
        ) from None
    if network.prefixlen == 0:
        raise ValueError(
            f"'{value}' opens every address, which is no allow-list (allowed: the service's "
            "own ranges)"
        )
    return value


EgressCidr = Annotated[str, AfterValidator(_check_egress_cidr)]


class EgressRule(_Model):
    """One external service the site may call (identity checks, e-signature...).

    A NetworkPolicy matches addresses and ports, never host names: `cidrs` are the ranges
    the provider publishes for the service, and `host` only documents which name they stand
    for (kept as an annotation). A service behind a changing CDN needs an egress proxy
    instead, which NetworkPolicy cannot express."""

    name: DnsLabel
    cidrs: Annotated[list[EgressCidr], Field(min_length=1)]
    ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]], Field(min_length=1)] = [443]
    host: Annotated[str, Field(pattern=_FQDN.pattern, max_length=253)] | None = None


# A Gateway API PathPrefix: '/' or '/'-separated non-empty segments, no trailing '/'.
_PATH_PREFIX = re.compile(r"^/([A-Za-z0-9_.~-]+(/[A-Za-z0-9_.~-]+)*)?$")
PathPrefix = Annotated[str, Field(pattern=_PATH_PREFIX.pattern, max_length=1024)]


def _within(path: str, prefix: str) -> bool:
    """Whether a PathPrefix match on `prefix` covers `path` (segment-wise, as Gateway API)."""
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


class WebAppSettings(_Model):
    """The agency's image serves the site on `port` (the only port the edge routes to) and
    its management endpoints, `metricsPath` and `healthPath`, on `managementPort`, which only
    Prometheus (the scrape) and the kubelet (the probes) reach."""

    image: Image
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    management_port: Annotated[int, Field(ge=1024, le=65535)] = 9090
    health_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_.-]*$")] = "/healthz"
    metrics_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_.-]*$")] = "/metrics"
    min_replicas: Annotated[int, Field(ge=1, le=50)]
    max_replicas: Annotated[int, Field(ge=1, le=100)]
    target_cpu_utilization: Annotated[int, Field(ge=10, le=95)] = 65
    resources: ResourceSettings
    # The external services the site may reach; empty: none (only DNS and CouchDB).
    egress: list[EgressRule] = []

    @model_validator(mode="after")
    def _egress_names_unique(self) -> Self:
        names = Counter(rule.name for rule in self.egress)
        for name, count in names.items():
            if count > 1:
                raise RuleViolation(
                    "egress", name, f"names {count} rules '{name}' (allowed: each name once)"
                )
        return self

    @model_validator(mode="after")
    def _management_port_of_its_own(self) -> Self:
        if self.management_port == self.port:
            raise RuleViolation(
                "managementPort",
                self.management_port,
                "is the public port too (allowed: a port of its own, which no route reaches)",
            )
        return self

    @model_validator(mode="after")
    def _replica_range(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise RuleViolation(
                "maxReplicas",
                self.max_replicas,
                f"is below minReplicas {self.min_replicas} (allowed: maxReplicas >= minReplicas)",
            )
        return self


class GatewaySettings(_Model):
    """The Gateway API implementation the hosting provider runs: Envoy Gateway (its policy
    kinds set TLS, rate limit and body limit), with a GatewayClass of that name."""

    class_name: Annotated[str, Field(pattern=_DNS_SUBDOMAIN.pattern, max_length=253)] = (
        "envoy-gateway"
    )
    # Where Envoy Gateway runs this Gateway's proxies (its own namespace, by default): the
    # only pods that may open the site's public port.
    proxy_namespace: DnsLabel = "envoy-gateway-system"


class IngressSettings(_Model):
    """The public edge: a Gateway of this environment (HTTPS, HTTP only to redirect) and an
    HTTPRoute sending `publicPaths` of `host` to the site's public port."""

    host: Annotated[str, Field(pattern=_FQDN.pattern, max_length=253)]
    cluster_issuer: DnsLabel
    gateway: GatewaySettings = GatewaySettings()
    # Path prefixes the Internet may reach (Gateway API PathPrefix: '/shop' matches /shop
    # and /shop/..., not /shopping); anything else answers 404 at the edge.
    public_paths: Annotated[list[PathPrefix], Field(min_length=1, max_length=16)] = ["/"]
    # Per client address, per Envoy replica (a local rate limit).
    rate_limit_rps: Annotated[int, Field(ge=1, le=10_000)] = 20
    # The largest request body, as ingress-nginx spelled it: bytes, or k/m for KiB/MiB.
    max_body_size: Annotated[str, Field(pattern=r"^[1-9][0-9]*[kmKM]?$")] = "2m"

    @model_validator(mode="before")
    @classmethod
    def _no_ingress_nginx_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("className", "controllerNamespace", "class_name", "controller_namespace"):
                if key in data:
                    raise RuleViolation(
                        key,
                        data[key],
                        "belongs to the retired ingress-nginx edge (allowed: "
                        "gateway.className and gateway.proxyNamespace, Gateway API)",
                    )
        return data

    @field_validator("public_paths")
    @classmethod
    def _paths_unique(cls, value: list[str]) -> list[str]:
        for path, count in Counter(value).items():
            if count > 1:
                raise ValueError(f"'{path}' is listed {count} times (allowed: each path once)")
        return value

    def max_body_quantity(self) -> str:
        """maxBodySize as a Kubernetes quantity ("2m" -> "2Mi", "512k" -> "512Ki")."""
        size = self.max_body_size
        suffix = {"k": "Ki", "m": "Mi"}.get(size[-1].lower())
        return size[:-1] + suffix if suffix else size


class OpsSettings(_Model):
    image: Image
    resources: ResourceSettings


class ObjectStorageSettings(_Model):
    """The S3-compatible bucket that receives an age-encrypted copy of every backup.

    Its credentials are a Kubernetes Secret the hosting provider creates outside Pulumi (keys
    `accessKeyId`, `secretAccessKey`): they never pass through the stack config or the state.
    """

    endpoint: Annotated[str, AfterValidator(_check_endpoint)]
    bucket: Annotated[str, AfterValidator(_check_bucket)]
    # The copies hold customer data, encrypted or not: they stay in France too.
    region: FrenchRegion
    # Every object's key starts with it; unset, `<environment>/` (see `key_prefix`).
    prefix: str | None = None
    credentials_secret: Annotated[str, Field(pattern=_DNS_SUBDOMAIN.pattern, max_length=253)]
    # Public keys only: the cluster can write backups it cannot read.
    recipients: Annotated[list[AgeRecipient], Field(min_length=1)]
    keep_local_copy: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_in_the_endpoint(cls, data: object) -> object:
        # Checked before the field, whose error would show the URL with its credentials.
        endpoint = data.get("endpoint") if isinstance(data, dict) else None
        if isinstance(endpoint, str):
            parts = urlsplit(endpoint)
            if parts.username or parts.password:
                shown = parts._replace(netloc=f"***@{parts.hostname or ''}").geturl()
                raise RuleViolation(
                    "endpoint",
                    shown,
                    "carries credentials in the URL (allowed: none; they come from "
                    "backup.objectStorage.credentialsSecret)",
                )
        return data

    @field_validator("prefix")
    @classmethod
    def _object_prefix(cls, value: str | None) -> str | None:
        if value is not None and not _OBJECT_PREFIX.match(value):
            raise ValueError(
                f"'{value}' is not an object key prefix (allowed: empty, or path segments of "
                "A-Z a-z 0-9 !_.*'()- each ending with '/', such as prod/)"
            )
        return value

    @field_validator("recipients")
    @classmethod
    def _distinct_recipients(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("recipients repeat (allowed: each public key once)")
        return values

    def key_prefix(self, environment: str) -> str:
        """`prefix`, or `<environment>/`: two environments sharing a bucket never mix."""
        return f"{environment}/" if self.prefix is None else self.prefix


class BackupSettings(_Model):
    """The backup volume and the three CronJobs that share it."""

    schedule: Cron = "15 1 * * *"
    # A week: enough to restore from a bad night, short enough that a backup may hold data
    # nearly as old as the budget allows (see Settings._backups_within_the_budget).
    retention_days: RetentionDays = 7
    storage_size: Quantity
    storage_class: DnsLabel | None = None
    # Weekly, in working hours, clear of the nightly backup sharing the same volume.
    verify_schedule: Cron = "0 9 * * 0"
    # Hourly, apart from the backup itself, so backups expire even when backups fail.
    expiry_schedule: Cron = "7 * * * *"
    # Off-site copies, encrypted before they leave the cluster; none when unset.
    object_storage: ObjectStorageSettings | None = None


class PurgeSettings(_Model):
    # 03:30 exists every day in Europe/Paris; 02:30 does not on the last Sunday of March.
    schedule: Cron = "30 3 * * *"
    # The longest the budget allows with a daily purge and a 6-hour run (28 + 25 h + 6 h).
    retention_days: RetentionDays = 28
    # A run that has not finished by then is stopped; data it did not reach waits for the
    # next run, so this counts in the database's worst case.
    deadline_hours: Annotated[int, Field(ge=1, le=23)] = 6


class GdprSettings(_Model):
    """The one retention budget: no copy of personal data may be older than this."""

    max_age_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = MAX_RETENTION_DAYS


class ConsolidationSettings(_Model):
    """The one-off migration of the legacy per-user databases (off unless asked for)."""

    enabled: bool = False
    concurrency: Annotated[int, Field(ge=1, le=32)] = 8
    # Only sources whose every document was found in the consolidated database are deleted.
    delete_sources: bool = False


class MonitoringSettings(_Model):
    namespace: DnsLabel = "monitoring"
    # Label that the Prometheus Operator's selectors match on ServiceMonitor & co.
    prometheus_release: DnsLabel = "kube-prometheus-stack"
    pushgateway_url: Annotated[str, Field(pattern=r"^https?://[a-z0-9.-]+(:[0-9]+)?/?$")]
    blackbox_prober_url: Annotated[str, Field(pattern=r"^[a-z0-9.-]+(:[0-9]+)?$")]
    runbook_base_url: Annotated[str, Field(pattern=r"^https://\S+[^/]$")]
    grafana_dashboard_label: str = "grafana_dashboard"


def shard_quorum(copies: int) -> int:
    """How many copies of a shard range CouchDB reads and writes by default (r, w: n div 2 + 1)."""
    return copies // 2 + 1


def _spread(total: int, room: Mapping[str, int]) -> dict[str, int]:
    """`total` items over the zones of `room` (in its order), never more than room[zone] in a
    zone, one at a time to the zone holding fewest so far: the most even spread the room
    allows. It holds fewer than `total` when the room is too small."""
    spread = dict.fromkeys(room, 0)
    for _ in range(total):
        open_zones = [zone for zone in room if spread[zone] < room[zone]]
        if not open_zones:
            break
        spread[min(open_zones, key=spread.__getitem__)] += 1
    return spread


def couchdb_pods_per_zone(nodes_per_zone: Mapping[str, int], replicas: int) -> dict[str, int]:
    """The CouchDB pods each zone holds whichever nodes the scheduler picks, one pod per node
    (required anti-affinity), spread evenly over the zones (topology spread): every zone gets
    as many as the fullest level all of them can reach; pods past that level go to any zone
    with a free node, so they are not counted on."""
    level = 0
    while level < max(nodes_per_zone.values()) and (
        sum(min(nodes, level + 1) for nodes in nodes_per_zone.values()) <= replicas
    ):
        level += 1
    return {zone: min(nodes, level) for zone, nodes in nodes_per_zone.items()}


def _zone_room(pods: Mapping[str, int], copies: int) -> dict[str, int]:
    """The most copies of a range each zone may hold: no more than its CouchDB pods (one copy
    per node), and few enough that losing the zone leaves a quorum of the copies."""
    most = copies - shard_quorum(copies)
    return {zone: min(count, most) for zone, count in pods.items()}


def zone_placement(
    nodes_per_zone: Mapping[str, int], replicas: int, copies: int
) -> dict[str, int] | None:
    """CouchDB's `[cluster] placement` (zone -> copies of each shard range, zones in name
    order, zones without a copy left out) for `copies` copies over CouchDB pods spread as
    `couchdb_pods_per_zone` says: the most even one, or None when no placement lets the loss
    of any one zone leave a quorum of every range. The most even placement has the smallest
    largest share, so when it fails every other placement fails too."""
    zones = {zone: nodes_per_zone[zone] for zone in sorted(nodes_per_zone)}
    room = _zone_room(couchdb_pods_per_zone(zones, replicas), copies)
    spread = _spread(copies, room)
    if sum(spread.values()) < copies:
        return None
    return {zone: count for zone, count in spread.items() if count}


def _zone_placement_refusal(
    nodes_per_zone: Mapping[str, int], replicas: int, copies: int
) -> RuleViolation:
    """Why `zone_placement` found none, naming the zones, their nodes, pods and room, and the
    values of the setting at fault that would do."""
    zones = {zone: nodes_per_zone[zone] for zone in sorted(nodes_per_zone)}
    quorum = shard_quorum(copies)
    if copies - quorum < 1:
        return RuleViolation(
            "couchdb.shardCopies",
            copies,
            f"with {_plural(copies, 'copy', 'copies')} of each shard range the quorum is "
            f"{quorum}, so losing any zone that holds one loses the quorum of every range "
            "(allowed: at least 3, in at least 3 zones)",
        )
    pods = couchdb_pods_per_zone(zones, replicas)
    room = _zone_room(pods, copies)
    described = ", ".join(
        f"{zone} ({_plural(nodes, 'node')}, {_plural(pods[zone], 'CouchDB pod')}: "
        f"room for {room[zone]})"
        for zone, nodes in zones.items()
    )
    limits = (
        f"a zone may hold at most {copies - quorum} of the {copies} copies of a shard range, "
        f"so that losing it leaves a quorum of {quorum}, and no more than its CouchDB pods"
    )
    total_nodes = sum(zones.values())
    pods_that_fit = [
        count
        for count in range(copies, total_nodes + 1)
        if zone_placement(zones, count, copies) is not None
    ]
    if pods_that_fit:
        return RuleViolation(
            "couchdb.replicas",
            replicas,
            f"spread evenly over the zones of nodePool.nodes, {replicas} CouchDB pods leave "
            f"too little room for couchdb.shardCopies {copies}: {limits}; {described} "
            f"(allowed: {_either(pods_that_fit)})",
        )
    copies_that_fit = [
        count for count in range(3, replicas + 1) if zone_placement(zones, replicas, count)
    ]
    allowed = (
        f"{_either(copies_that_fit)} with these zones and {replicas} CouchDB pods"
        if copies_that_fit
        else "none with these zones: the nodes must span at least 3 zones"
    )
    return RuleViolation(
        "couchdb.shardCopies",
        copies,
        f"losing one zone would lose the quorum of some shard range: {limits}; {described} "
        f"(allowed: {allowed})",
    )


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _either(values: list[int]) -> str:
    shown = [str(value) for value in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _secret_of_length(value: SecretStr, least: int, allowed: re.Pattern[str] | None) -> SecretStr:
    # The value itself never appears in a message: it is a key.
    secret = value.get_secret_value()
    if len(secret) < least or (allowed is not None and not allowed.match(secret)):
        raise ValueError(
            "is not a key this program generates (allowed: the value from the key escrow, "
            f"at least {least} characters)"
        )
    return value


class RestoredKeys(_Model):
    """Keys taken back from the key escrow after the state was lost or the stack rebuilt
    (runbooks/state-safety.md). Each one given replaces the generated one for good; the
    decrypted escrow (`pulumi stack output keyEscrow`) is a valid value as a whole."""

    format: str | None = None
    # The environment the escrow was taken from: keys of another one are refused.
    environment: Environment | None = None
    partition_secret: SecretStr | None = None
    erlang_cookie: SecretStr | None = None
    uuid: SecretStr | None = None
    auth_secret: SecretStr | None = None

    @field_validator("format")
    @classmethod
    def _escrow_format(cls, value: str | None) -> str | None:
        if value not in (None, ESCROW_FORMAT):
            raise ValueError(f"'{value}' is not a key escrow format (allowed: {ESCROW_FORMAT})")
        return value

    @field_validator("partition_secret", "auth_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _secret_of_length(value, 32, None)

    @field_validator("erlang_cookie")
    @classmethod
    def _cookie(cls, value: SecretStr | None) -> SecretStr | None:
        allowed = re.compile(r"^[A-Za-z0-9._-]+$")
        return None if value is None else _secret_of_length(value, 20, allowed)

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^[0-9a-f]{32}$", value.get_secret_value()):
            raise ValueError("is not a CouchDB server uuid (allowed: 32 lower-case hex digits)")
        return value


class Settings(_Model):
    environment: Environment
    kubernetes_version: str
    node_pool: NodePoolSettings
    couchdb: CouchDBSettings
    webapp: WebAppSettings
    ingress: IngressSettings
    ops: OpsSettings
    backup: BackupSettings
    purge: PurgeSettings
    monitoring: MonitoringSettings
    consolidation: ConsolidationSettings = ConsolidationSettings()
    gdpr: GdprSettings = GdprSettings()
    # Where every CronJob's schedule is read (CronJob spec.timeZone).
    time_zone: TimeZone = "Europe/Paris"
    # The bank's escrow key: the stack output keyEscrow holds the cluster's keys encrypted
    # to it. Unset, the keys are not escrowed (a warning says so at every run).
    escrow_recipient: AgeRecipient | None = None
    # The kubeconfig context of this stack's cluster. Required to deploy (infra/config.py
    # refuses a deploy without it, or when the kubeconfig has no context of that name), and
    # given to the provider explicitly: the kubeconfig's current-context is never used.
    # Unused in render mode.
    kube_context: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^\S+$")] | None = (
        None
    )
    # Secret (`pulumi config set --secret`): keys restored from the escrow.
    restored_keys: RestoredKeys | None = None
    # Every image pinned by digest (`name@sha256:<64 hex>`, with or without a tag): what a
    # tag points at can change in the registry, a digest cannot. A stack that cannot cite
    # digests yet says so with `false`, and every run warns of each tag-only image.
    require_image_digests: bool = True

    def tag_only_images(self) -> dict[str, str]:
        """The images pinned by tag only, by settings key."""
        images = {
            "couchdb.image": self.couchdb.image,
            "webapp.image": self.webapp.image,
            "ops.image": self.ops.image,
        }
        return {key: image for key, image in images.items() if "@sha256:" not in image}

    @model_validator(mode="after")
    def _images_pinned_by_digest(self) -> Self:
        if self.require_image_digests:
            for key, image in self.tag_only_images().items():
                raise RuleViolation(
                    key,
                    image,
                    "is pinned by tag only while requireImageDigests is true (allowed: "
                    "registry/name:tag@sha256:<64 hex digits>, or requireImageDigests: false)",
                )
        return self

    @model_validator(mode="after")
    def _restored_keys_of_this_environment(self) -> Self:
        restored = self.restored_keys
        if restored is not None and restored.environment not in (None, self.environment):
            raise RuleViolation(
                "restoredKeys.environment",
                restored.environment,
                f"is the key escrow of another environment than {self.environment} "
                "(allowed: this environment's own escrow)",
            )
        return self

    @field_validator("kubernetes_version")
    @classmethod
    def _supported_kubernetes(cls, value: str) -> str:
        match = _K8S_VERSION.match(value)
        if match is None or not 30 <= int(match.group(1)) <= 35:
            raise ValueError(
                f"'{value}' is not a supported Kubernetes version (allowed: 1.30.0 to 1.35.x)"
            )
        return value

    @model_validator(mode="after")
    def _management_paths_not_public(self) -> Self:
        for path in self.ingress.public_paths:
            for name, management in (
                ("metricsPath", self.webapp.metrics_path),
                ("healthPath", self.webapp.health_path),
            ):
                if _within(path, management):
                    raise RuleViolation(
                        "ingress.publicPaths",
                        path,
                        f"lies within webapp.{name} {management}, a management path "
                        "(allowed: public paths only; the management port is never routed)",
                    )
        return self

    @model_validator(mode="after")
    def _environment_rules(self) -> Self:
        nodes = len(self.node_pool.nodes)
        if self.couchdb.replicas > nodes:
            raise RuleViolation(
                "couchdb.replicas",
                self.couchdb.replicas,
                f"exceeds the {nodes} nodes of nodePool.nodes "
                "(allowed: at most one CouchDB pod per node)",
            )
        if self.environment == "prod":
            if self.couchdb.replicas < 3:
                raise RuleViolation(
                    "couchdb.replicas",
                    self.couchdb.replicas,
                    "is too few for prod (allowed: at least 3, so one node loss keeps a quorum)",
                )
            if self.couchdb.shard_copies < 3:
                raise RuleViolation(
                    "couchdb.shardCopies",
                    self.couchdb.shard_copies,
                    "is too few for prod (allowed: at least 3 copies of every shard)",
                )
            if self.webapp.min_replicas < 2:
                raise RuleViolation(
                    "webapp.minReplicas",
                    self.webapp.min_replicas,
                    "is too few for prod (allowed: at least 2, so a drain never empties the site)",
                )
        if self.couchdb.shard_copies > self.couchdb.replicas:
            raise RuleViolation(
                "couchdb.shardCopies",
                self.couchdb.shard_copies,
                f"exceeds couchdb.replicas {self.couchdb.replicas} "
                "(allowed: shardCopies <= replicas, each copy needs its own node)",
            )
        return self

    @model_validator(mode="after")
    def _couchdb_survives_a_zone_loss(self) -> Self:
        zones = self.nodes_per_zone
        copies, replicas = self.couchdb.shard_copies, self.couchdb.replicas
        if zone_placement(zones, replicas, copies) is None:
            raise _zone_placement_refusal(zones, replicas, copies)
        return self

    @model_validator(mode="after")
    def _schedules_run_in_their_zone(self) -> Self:
        schedules = {
            "backup.schedule": self.backup.schedule,
            "backup.verifySchedule": self.backup.verify_schedule,
            "backup.expirySchedule": self.backup.expiry_schedule,
            "purge.schedule": self.purge.schedule,
        }
        for key, schedule in schedules.items():
            try:
                longest_gap(schedule, self.time_zone)
            except NoGap as error:
                raise RuleViolation(
                    key, schedule, f"{error} in {self.time_zone} (allowed: a schedule that runs)"
                ) from None
        purge = self.purge_gap
        if purge.length > PURGE_MAX_INTERVAL:
            raise RuleViolation(
                "purge.schedule",
                self.purge.schedule,
                f"{purge.where()}, leaving {_hours(purge.length)} between purges "
                f"(allowed: at most {PURGE_MAX_INTERVAL // timedelta(hours=1)} hours)",
            )
        if self.backup_expiry_interval_hours > BACKUP_EXPIRY_MAX_INTERVAL_HOURS:
            expiry = longest_gap(self.backup.expiry_schedule, self.time_zone)
            raise RuleViolation(
                "backup.expirySchedule",
                self.backup.expiry_schedule,
                f"{expiry.where()}, leaving {_hours(expiry.length)} between expiry runs "
                f"(allowed: at most {BACKUP_EXPIRY_MAX_INTERVAL_HOURS} hours)",
            )
        return self

    @model_validator(mode="after")
    def _database_within_the_budget(self) -> Self:
        budget = timedelta(days=self.gdpr.max_age_days)
        gap, run = self.purge_gap.length, timedelta(hours=self.purge.deadline_hours)
        retention = self.purge.retention_days
        # Data turns `retention` days old just after a purge started; the next one starts up
        # to `gap` later and may take until its deadline to reach it. Runs are taken to start
        # on time: a run started late (up to startingDeadlineSeconds) or failed is for the
        # GDPRPurgeFailed/GDPRPurgeStale alerts, not for this bound.
        worst = timedelta(days=retention) + gap + run
        if worst > budget:
            allowed = (budget - gap - run).days
            raise RuleViolation(
                "purge.retentionDays",
                retention,
                f"the database would keep personal data up to {_days(worst)} ({retention} days "
                f"retention + up to {_hours(gap)} between purges in {self.time_zone} + a run of "
                f"up to {_hours(run)}), over the {self.gdpr.max_age_days}-day budget "
                f"{{namespace}}:gdpr.maxAgeDays (allowed: {_at_most(allowed)})",
            )
        return self

    @model_validator(mode="after")
    def _backups_within_the_budget(self) -> Self:
        # A backup copies only data younger than what is left of the budget once the backup's
        # own life and the wait for the expiry job are taken out (couchops/retention.py):
        # nothing in it outlives the budget. Without anything left, no data may be copied.
        retention, interval = self.backup.retention_days, self.backup_expiry_interval_hours
        life = timedelta(days=retention, hours=interval)
        if life >= timedelta(days=self.gdpr.max_age_days):
            allowed = (self.gdpr.max_age_days * 24 - interval - 1) // 24
            raise RuleViolation(
                "backup.retentionDays",
                retention,
                f"backups would keep what they hold up to {_days(life)} ({retention} days "
                f"retention + up to {_hours(timedelta(hours=interval))} between expiry runs in "
                f"{self.time_zone}), leaving no data young enough to back up under the "
                f"{self.gdpr.max_age_days}-day budget {{namespace}}:gdpr.maxAgeDays "
                f"(allowed: {_at_most(allowed)})",
            )
        return self

    @property
    def namespace(self) -> str:
        return f"onboarding-{self.environment}"

    @property
    def nodes_per_zone(self) -> dict[str, int]:
        """How many of nodePool.nodes each zone has."""
        return dict(Counter(node.zone for node in self.node_pool.nodes))

    @property
    def couchdb_placement(self) -> dict[str, int]:
        """CouchDB's `[cluster] placement`: zone -> copies of each shard range of a new
        database, summing to couchdb.shardCopies; losing any one zone leaves a quorum."""
        placement = zone_placement(
            self.nodes_per_zone, self.couchdb.replicas, self.couchdb.shard_copies
        )
        assert placement is not None  # _couchdb_survives_a_zone_loss refused the settings
        return placement

    @property
    def purge_gap(self) -> Gap:
        """The longest wait between two purges, in the zone the CronJob runs in."""
        return longest_gap(self.purge.schedule, self.time_zone)

    @property
    def purge_interval_hours(self) -> int:
        """The longest wait between two purge starts, in whole hours rounded up."""
        return math.ceil(self.purge_gap.length / timedelta(hours=1))

    @property
    def backup_expiry_interval_hours(self) -> int:
        """The longest wait between two expiry runs, in whole hours rounded up: what couchops
        takes out of a backup's data window (BACKUP_EXPIRY_INTERVAL_HOURS)."""
        gap = longest_gap(self.backup.expiry_schedule, self.time_zone).length
        return math.ceil(gap / timedelta(hours=1))


def _at_most(days: int) -> str:
    return f"at most {days}" if days >= 1 else "none, whatever the retention"


class SettingsError(ValueError):
    """A stack setting is invalid; the message names the key, the value and what is allowed."""


def _key_path(namespace: str, location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + part)
    return f"{namespace}:{''.join(parts)}" if parts else namespace


def describe_errors(error: ValidationError, namespace: str) -> str:
    lines = []
    for item in error.errors():
        location = tuple(item["loc"])
        key = _key_path(namespace, location)
        message = item["msg"].removeprefix("Value error, ")
        violation = item.get("ctx", {}).get("error")
        if isinstance(violation, RuleViolation):
            rule_key = f"{key}.{violation.key}" if location else f"{namespace}:{violation.key}"
            # A rule's message names other settings as `{namespace}:key`.
            message = message.replace("{namespace}", namespace)
            lines.append(f"{rule_key} = {violation.value!r}: {message}")
        elif location and location[0] in SECRET_SETTINGS:
            # A key: the message never shows the value given.
            lines.append(f"{key}: {message}")
        elif item["type"] == "missing":
            lines.append(f"{key}: is required but not set")
        elif item["type"] == "extra_forbidden":
            lines.append(f"{key}: is not a known setting (check its spelling)")
        elif isinstance(item["input"], dict | list):
            lines.append(f"{key}: {message}")
        else:
            lines.append(f"{key} = {item['input']!r}: {message}")
    return "invalid stack settings:\n  " + "\n  ".join(lines)


def parse_settings(raw: dict[str, object], namespace: str = "onboarding") -> Settings:
    """Validate the raw stack config; raise SettingsError naming every bad key."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        raise SettingsError(describe_errors(error, namespace)) from None
