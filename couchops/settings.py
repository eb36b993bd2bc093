"""Settings: read once from environment variables and mounted secret files, validated at the edge.

Every field has one environment variable (see ``ENV_NAMES``); secrets may instead come from a
file named by ``<VAR>_FILE`` (a mounted Kubernetes Secret), which is preferred in the cluster.
A bad value stops the run with one line naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from couchops.backup import BackupRetention
from couchops.couch import check_http_url, parse_node_urls
from couchops.errors import SettingsError
from couchops.retention import DataCutoff

MAX_RETENTION_DAYS = 30
"""GDPR: nothing personal may stay readable for more than 30 days, so no retention above it."""

ENV_NAMES: dict[str, str] = {
    "couchdb_url": "COUCHDB_URL",
    "admin_user": "COUCHDB_ADMIN_USER",
    "admin_password": "COUCHDB_ADMIN_PASSWORD",
    "nodes": "COUCHDB_NODES",
    "node_urls": "COUCHDB_NODE_URLS",
    "ca_file": "COUCHDB_CA_FILE",
    "database": "COUCHDB_DATABASE",
    "shards": "COUCHDB_SHARDS",
    "replicas": "COUCHDB_REPLICAS",
    "purged_infos_limit": "COUCHDB_PURGED_INFOS_LIMIT",
    "setup_timeout_seconds": "COUCHDB_SETUP_TIMEOUT_SECONDS",
    "app_user": "COUCHDB_APP_USER",
    "app_password": "COUCHDB_APP_PASSWORD",
    "purge_retention_days": "PURGE_RETENTION_DAYS",
    "purge_timestamp_field": "PURGE_TIMESTAMP_FIELD",
    "purge_concurrency": "PURGE_CONCURRENCY",
    "purge_compact": "PURGE_COMPACT",
    "backup_dir": "BACKUP_DIR",
    "backup_retention_days": "BACKUP_RETENTION_DAYS",
    "backup_expiry_interval_hours": "BACKUP_EXPIRY_INTERVAL_HOURS",
    "gdpr_max_age_days": "GDPR_MAX_AGE_DAYS",
    "backup_concurrency": "BACKUP_CONCURRENCY",
    "user_partition_secret": "USER_PARTITION_SECRET",
    "consolidate_concurrency": "CONSOLIDATE_CONCURRENCY",
    "pushgateway_url": "PUSHGATEWAY_URL",
    "environment": "ENVIRONMENT",
    "http_timeout_seconds": "HTTP_TIMEOUT_SECONDS",
    "http_retries": "HTTP_RETRIES",
}

_URL_CREDENTIALS = re.compile(r"://[^/@\s,]*@")
SECRET_FIELDS = frozenset(
    {"admin_user", "admin_password", "app_user", "app_password", "user_partition_secret"}
)
"""Fields that may come from a ``<VAR>_FILE`` file as well as from ``<VAR>``."""

_DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")


class Settings(BaseModel):
    """Everything a run may need; each command checks that the fields it uses are set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    couchdb_url: Annotated[str, Field(min_length=1)] = "http://127.0.0.1:5984"
    admin_user: SecretStr | None = None
    admin_password: SecretStr | None = None
    nodes: tuple[str, ...] = ()
    node_urls: str | None = None
    ca_file: Path | None = None
    """PEM file of the CA that issued CouchDB's certificate: HTTPS is verified against it
    (without it, against the system's CAs); never switched off."""
    database: str = "onboarding"
    shards: Annotated[int, Field(ge=1, le=64)] = 2
    replicas: Annotated[int, Field(ge=1, le=5)] = 3
    purged_infos_limit: Annotated[int, Field(ge=100, le=10_000_000)] | None = None
    setup_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0
    app_user: SecretStr | None = None
    app_password: SecretStr | None = None
    purge_retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = 30
    purge_timestamp_field: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")] = "createdAt"
    purge_concurrency: Annotated[int, Field(ge=1, le=16)] = 4
    purge_compact: bool = True
    backup_dir: Path | None = None
    backup_retention_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = 7
    backup_expiry_interval_hours: Annotated[int, Field(ge=0, le=24)] = 1
    gdpr_max_age_days: Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS)] = MAX_RETENTION_DAYS
    """The one budget: no copy keeps personal data longer (`couchops.retention`)."""
    backup_concurrency: Annotated[int, Field(ge=1, le=16)] = 8
    user_partition_secret: SecretStr | None = None
    consolidate_concurrency: Annotated[int, Field(ge=1, le=32)] = 8
    pushgateway_url: str | None = None
    environment: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")] = "dev"
    http_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    http_retries: Annotated[int, Field(ge=0, le=10)] = 4

    @field_validator("couchdb_url")
    @classmethod
    def _url_without_credentials(cls, value: str) -> str:
        try:
            return check_http_url(value)
        except ValueError as exc:
            raise ValueError(
                f"{exc} (such as http://couchdb:5984; the credentials go in "
                "COUCHDB_ADMIN_USER(_FILE) and COUCHDB_ADMIN_PASSWORD(_FILE))"
            ) from None

    @field_validator("node_urls")
    @classmethod
    def _node_urls(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_node_urls(value)
        return value.strip()

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is None or not str(value).strip():
            return None
        try:
            text = value.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot be read ({exc})") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError("holds no PEM certificate")
        return value

    @field_validator("pushgateway_url")
    @classmethod
    def _pushgateway(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL such as http://pushgateway:9091")
        return value.rstrip("/")

    @field_validator("database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        if not _DB_NAME.match(value):
            raise ValueError("must be a CouchDB database name: [a-z][a-z0-9_$()+/-]*")
        return value

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for node in value:
            if not re.match(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$", node):
                raise ValueError(f"{node!r} is not an Erlang node name such as couchdb@host")
        return value

    def credentials(self) -> tuple[str, str] | None:
        if self.admin_user is None and self.admin_password is None:
            return None
        if self.admin_user is None or self.admin_password is None:
            raise SettingsError(
                "admin credentials are half set: give both COUCHDB_ADMIN_USER(_FILE) "
                "and COUCHDB_ADMIN_PASSWORD(_FILE)"
            )
        return self.admin_user.get_secret_value(), self.admin_password.get_secret_value()

    def backup_retention(self) -> BackupRetention:
        return BackupRetention(
            retention_days=self.backup_retention_days,
            max_age_days=self.gdpr_max_age_days,
            expiry_interval_hours=self.backup_expiry_interval_hours,
            timestamp_field=self.purge_timestamp_field,
        )

    def purge_cutoff(self, now: datetime) -> DataCutoff:
        """What the purge keeps: data collected within the purge's retention."""
        return DataCutoff(
            now - timedelta(days=self.purge_retention_days), now, self.purge_timestamp_field
        )

    def require_backup_dir(self) -> Path:
        if self.backup_dir is None:
            raise SettingsError("BACKUP_DIR is not set: name the directory that holds backups")
        return self.backup_dir


def read_secret_file(label: str, path: str) -> str:
    """A secret from a mounted file, without its trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{label}={path}: cannot read the file ({exc.strerror})") from exc
    value = text.rstrip("\r\n")
    if not value:
        raise SettingsError(f"{label}={path}: the file is empty")
    return value


def _without_credentials(value: object) -> object:
    """A setting as an error message may show it: credentials in URLs masked."""
    return _URL_CREDENTIALS.sub("://<credentials>@", value) if isinstance(value, str) else value


def load_settings(
    environ: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from the environment, then apply command-line overrides (not None);
    ``flags`` names the option each override came from, for error messages."""
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for field, var in ENV_NAMES.items():
        direct = environ.get(var)
        from_file = environ.get(f"{var}_FILE") if field in SECRET_FIELDS else None
        if direct and from_file:
            raise SettingsError(f"set {var} or {var}_FILE, not both")
        if from_file:
            raw[field] = read_secret_file(f"{var}_FILE", from_file)
            origin[field] = f"{var}_FILE"
        elif direct is not None and direct != "":
            raw[field] = direct
            origin[field] = var
    for field, value in (overrides or {}).items():
        if value is not None:
            raw[field] = value
            origin[field] = (flags or {}).get(field, "--" + field.replace("_", "-"))
    try:
        return Settings(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        name = origin.get(field, ENV_NAMES.get(field, field))
        shown = "<secret>" if field in SECRET_FIELDS else _without_credentials(raw.get(field))
        message = str(first["msg"]).removeprefix("Value error, ")
        if field.endswith("retention_days") or field == "gdpr_max_age_days":
            message += f" (GDPR: a retention is 1 to {MAX_RETENTION_DAYS} days)"
        raise SettingsError(f"bad setting {name}={shown}: {message}") from exc
