"""The `couchops` command line: one tool, one subcommand per operation.

Exit codes: 0 success; 1 operation failed; 2 bad setting or usage; 3 CouchDB refused or
unreachable; 4 verification failed; 70 internal error. On failure the last line on standard
error is one plain sentence naming the problem; the logs before it are JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from couchops import __version__, offsite, pseudonym
from couchops.audit import audit
from couchops.backup import (
    backup,
    expire_backups,
    list_backups,
    parse_mapping,
    resolve_backup,
    restore,
    verify,
)
from couchops.cluster_setup import cluster_setup
from couchops.consolidate import consolidate
from couchops.couch import Couch
from couchops.errors import OpsError, PartialFailure, SettingsError
from couchops.log import configure, logger
from couchops.metrics import build_registry, push
from couchops.purge import PurgeOptions, purge
from couchops.retention import DataCutoff
from couchops.settings import Settings, load_settings, read_secret_file

Counts = dict[str, float]


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection and reporting (defaults from the environment)")
    g.add_argument("--couchdb-url", help="CouchDB base URL [COUCHDB_URL]")
    g.add_argument("--admin-user", help="admin user name [COUCHDB_ADMIN_USER(_FILE)]")
    g.add_argument(
        "--admin-password-file",
        help="file holding the admin password [COUCHDB_ADMIN_PASSWORD(_FILE)]; "
        "never on the command line, where `ps` would show it",
    )
    g.add_argument("--environment", help="environment label of the metrics [ENVIRONMENT]")
    g.add_argument("--pushgateway-url", help="push metrics there [PUSHGATEWAY_URL]")
    g.add_argument(
        "--http-timeout-seconds", type=float, help="per-request timeout [HTTP_TIMEOUT_SECONDS]"
    )
    g.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="couchops",
        description="Operations of the onboarding platform's CouchDB cluster. Settings come "
        "from environment variables and *_FILE secret files; flags override them.",
    )
    parser.add_argument("--version", action="version", version=f"couchops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "cluster-setup",
        help="wait for the cluster, finish it, create databases, indexes, security",
        description="Wait (bounded) until every expected node is a member and answers, run "
        "finish_cluster if needed, create the system databases and the partitioned "
        "consolidated database with its indexes and _security. Idempotent.",
    )
    _common(p)
    p.add_argument("--nodes", help="comma list of Erlang node names [COUCHDB_NODES]")
    p.add_argument("--database", help="consolidated database [COUCHDB_DATABASE]")
    p.add_argument("--shards", type=int, help="q of the database [COUCHDB_SHARDS]")
    p.add_argument("--replicas", type=int, help="n of the database [COUCHDB_REPLICAS]")
    p.add_argument(
        "--setup-timeout-seconds", type=float, help="bound [COUCHDB_SETUP_TIMEOUT_SECONDS]"
    )

    p = sub.add_parser(
        "purge",
        help="GDPR purge of everything older than the retention",
        description="Purge every document older than PURGE_RETENTION_DAYS (30 by default, "
        "never more) from every database that holds data, all revisions included.",
    )
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    p.add_argument("--retention-days", type=int, help="1..30 [PURGE_RETENTION_DAYS]")
    p.add_argument("--timestamp-field", help="creation timestamp field [PURGE_TIMESTAMP_FIELD]")
    p.add_argument("--database", action="append", help="only this database (repeatable)")
    p.add_argument("--concurrency", type=int, help="purge requests in flight [PURGE_CONCURRENCY]")
    p.add_argument("--max-batches", type=int, help="stop after N purge requests (throttle)")
    p.add_argument(
        "--no-compact", action="store_true", help="do not compact after purging [PURGE_COMPACT]"
    )
    p.add_argument(
        "--no-audit", action="store_true", help="do not audit the databases after purging"
    )

    p = sub.add_parser(
        "backup",
        help="back up every database with data, attachments included",
        description="Write every non-system database (every leaf revision, attachments, "
        "settings) to compressed files with a manifest, atomically; then delete expired "
        "backups. With S3_* set, also copy it off site, age-encrypted to "
        "BACKUP_AGE_RECIPIENTS, and read it back (BACKUP_KEEP_LOCAL_COPY=false then deletes "
        "the local copy).",
    )
    _common(p)
    p.add_argument("--backup-dir", help="[BACKUP_DIR]")
    p.add_argument("--retention-days", type=int, help="1..30 [BACKUP_RETENTION_DAYS]")
    p.add_argument("--database", action="append", help="only this database (repeatable)")
    p.add_argument("--concurrency", type=int, help="parallel reads [BACKUP_CONCURRENCY]")

    p = sub.add_parser(
        "restore",
        help="restore a backup into absent or empty databases (resumable)",
        description="Restore databases from a backup, every leaf revision and the database's "
        "settings, into absent or empty databases (or as cluster-setup leaves them); a "
        "restore killed midway, run again, goes on from its checkpoint.",
    )
    _common(p)
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="backup dir, id, 'latest', or off site: 's3:<id>', 's3:latest' (downloaded into "
        "BACKUP_DIR, resumable; needs S3_* and BACKUP_AGE_IDENTITY_FILE)",
    )
    p.add_argument("--backup-dir", help="[BACKUP_DIR]")
    p.add_argument(
        "--database",
        action="append",
        metavar="NAME[=TARGET]",
        help="restore only this database, optionally under another name (repeatable)",
    )
    p.add_argument("--concurrency", type=int, help="parallel writes [BACKUP_CONCURRENCY]")

    p = sub.add_parser(
        "verify",
        help="check a backup's files, counts and checksums",
        description="Check a backup against its manifest; with --live, also compare each "
        "database's content with the live database (e.g. after a test restore).",
    )
    _common(p)
    p.add_argument(
        "--backup",
        help="backup dir, id, 'latest' (default), or off site 's3:<id>', 's3:latest' (without "
        "BACKUP_AGE_IDENTITY_FILE: the stored objects checked against their index)",
    )
    p.add_argument("--backup-dir", help="[BACKUP_DIR]")
    p.add_argument("--database", action="append", metavar="NAME[=TARGET]")
    p.add_argument("--live", action="store_true", help="compare with the live databases")

    p = sub.add_parser(
        "consolidate",
        help="migrate userdb-<hex> databases into the partitioned database",
        description="Copy every legacy per-user database into the consolidated partitioned "
        "database (partition = keyed pseudonym of the user), verify per-user counts, and "
        "optionally delete verified sources. Idempotent and resumable.",
    )
    _common(p)
    p.add_argument("--database", help="target database [COUCHDB_DATABASE]")
    p.add_argument("--delete-sources", action="store_true", help="delete verified sources")
    p.add_argument("--concurrency", type=int, help="workers [CONSOLIDATE_CONCURRENCY]")
    p.add_argument("--limit", type=int, help="migrate at most N sources this run")
    p.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="migrate only this userdb-<hex> database (repeatable; default: every one)",
    )
    p.add_argument(
        "--partition-secret-file", help="key of the partition pseudonyms [USER_PARTITION_SECRET]"
    )
    _add_gdpr_commands(sub)
    return parser


def _add_gdpr_commands(sub: Any) -> None:
    """The commands that keep personal data within the budget, beyond the purge."""
    p = sub.add_parser(
        "backup-expire",
        help="delete the backups past their expiry (needs no CouchDB)",
        description="Delete every backup whose life (BACKUP_RETENTION_DAYS) is over or whose "
        "oldest datum would pass GDPR_MAX_AGE_DAYS, and what killed backup runs left. Run "
        "hourly on its own, so that backups expire even when backup runs fail. With S3_* "
        "set, the off-site copies too (without their key).",
    )
    _common(p)
    p.add_argument("--backup-dir", help="[BACKUP_DIR]")
    p.add_argument("--retention-days", type=int, help="1..30 [BACKUP_RETENTION_DAYS]")

    p = sub.add_parser(
        "whois",
        help="the database behind a pseudonym of the logs (db~<hex>)",
        description="Logs, metrics and error lines name databases by pseudonym (a legacy "
        "database's name holds an e-mail address); this prints the name behind one.",
    )
    _common(p)
    p.add_argument("pseudonym", help="db~<12 hex>, as the logs show it")

    p = sub.add_parser(
        "audit",
        help="prove that nothing older than the budget is readable anywhere",
        description="Read every database through every channel (documents, conflicts and old "
        "revisions, _all_docs, _changes, Mango, every view plain/stable/update=false, each "
        "shard copy) and every backup in BACKUP_DIR; fail (exit 4) if anything older than "
        "GDPR_MAX_AGE_DAYS (or --older-than-days) is readable. `purge` runs it after itself "
        "with its own cutoff.",
    )
    _common(p)
    p.add_argument("--database", action="append", help="only this database (repeatable)")
    p.add_argument("--older-than-days", type=int, help="cutoff age [GDPR_MAX_AGE_DAYS]")
    p.add_argument("--backup-dir", help="also audit the backups there [BACKUP_DIR]")
    p.add_argument(
        "--repair",
        action="store_true",
        help="purge again, by id, the documents that exist nowhere but whose rows an index "
        "copy kept (done by the audit that follows every purge)",
    )


FLAGS = {
    "purge_retention_days": "--retention-days",
    "backup_retention_days": "--retention-days",
    "purge_concurrency": "--concurrency",
    "backup_concurrency": "--concurrency",
    "consolidate_concurrency": "--concurrency",
    "purge_timestamp_field": "--timestamp-field",
    "admin_password": "--admin-password-file",
    "user_partition_secret": "--partition-secret-file",
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    get = args.__dict__.get
    out: dict[str, Any] = {
        "couchdb_url": get("couchdb_url"),
        "admin_user": get("admin_user"),
        "environment": get("environment"),
        "pushgateway_url": get("pushgateway_url"),
        "http_timeout_seconds": get("http_timeout_seconds"),
        "nodes": get("nodes"),
        "shards": get("shards"),
        "replicas": get("replicas"),
        "setup_timeout_seconds": get("setup_timeout_seconds"),
        "purge_timestamp_field": get("timestamp_field"),
        "backup_dir": get("backup_dir"),
    }
    if get("admin_password_file"):
        out["admin_password"] = read_secret_file("--admin-password-file", args.admin_password_file)
    if get("partition_secret_file"):
        out["user_partition_secret"] = read_secret_file(
            "--partition-secret-file", args.partition_secret_file
        )
    if args.command in ("cluster-setup", "consolidate"):
        out["database"] = get("database")
    if args.command == "purge":
        out["purge_retention_days"] = get("retention_days")
        out["purge_concurrency"] = get("concurrency")
        if args.no_compact:
            out["purge_compact"] = False
    if args.command in ("backup", "backup-expire"):
        out["backup_retention_days"] = get("retention_days")
    if args.command in ("backup", "restore"):
        out["backup_concurrency"] = get("concurrency")
    if args.command == "consolidate":
        out["consolidate_concurrency"] = get("concurrency")
    return out


def connect(settings: Settings) -> Couch:
    return Couch(
        settings.couchdb_url,
        settings.credentials(),
        timeout=settings.http_timeout_seconds,
        retries=settings.http_retries,
        node_urls=settings.node_urls,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
    )


def _cluster_setup(args: argparse.Namespace, settings: Settings) -> Counts:
    report = cluster_setup(connect(settings), settings)
    return {"changes": len(report.changes), "warnings": len(report.warnings), "nodes": report.nodes}


def _purge(args: argparse.Namespace, settings: Settings) -> Counts:
    args.purge_started = datetime.now(UTC)
    options = PurgeOptions(
        now=args.purge_started,
        retention_days=settings.purge_retention_days,
        timestamp_field=settings.purge_timestamp_field,
        dry_run=args.dry_run,
        concurrency=settings.purge_concurrency,
        compact=settings.purge_compact,
        max_batches=args.max_batches,
    )
    return purge(connect(settings), options, args.database).counts()


def _audit(args: argparse.Namespace, settings: Settings) -> Counts:
    now = datetime.now(UTC)
    if getattr(args, "after_purge", False):
        keep = settings.purge_cutoff(args.purge_started)
        keep = replace(keep, now=now)
    else:
        days = getattr(args, "older_than_days", None)
        if days is None:
            days = settings.gdpr_max_age_days
        elif not 1 <= days <= settings.gdpr_max_age_days:
            raise SettingsError(
                f"bad setting --older-than-days={days}: the audit's cutoff is 1 to "
                f"GDPR_MAX_AGE_DAYS={settings.gdpr_max_age_days} days"
            )
        keep = DataCutoff(now - timedelta(days=days), now, settings.purge_timestamp_field)
    backup_dir = settings.backup_dir if not getattr(args, "after_purge", False) else None
    backups_only = getattr(args, "scope", None) == "backups"
    report = audit(
        connect(settings),
        keep,
        databases=[] if backups_only else getattr(args, "database", None),
        backup_dir=backup_dir if backup_dir is not None and backup_dir.is_dir() else None,
        backup_keep=DataCutoff(
            now - timedelta(days=settings.gdpr_max_age_days), now, settings.purge_timestamp_field
        ),
        repair=getattr(args, "after_purge", False) or getattr(args, "repair", False),
    )
    return report.counts()


def _backup(args: argparse.Namespace, settings: Settings) -> Counts:
    # The off-site settings are read first: a bad one fails before hours of reading.
    storage = offsite.configured(os.environ)
    recipients = offsite.recipients_from_env(os.environ) if storage else []
    keep_local = offsite.keep_local_copy(os.environ)
    retention = settings.backup_retention()
    result = backup(
        connect(settings),
        settings.require_backup_dir(),
        retention=retention,
        databases=args.database,
        concurrency=settings.backup_concurrency,
    )
    totals = result.manifest["totals"]
    counts: Counts = {
        "databases": totals["databases"],
        "documents": totals["documents"],
        "documents_expired": totals["documents_expired"],
        "attachments": totals["attachments"],
        "bytes": totals["bytes"],
        "expired_deleted": len(result.deleted),
    }
    if storage is not None:
        remote = offsite.send_off_site(
            storage, result.path, recipients, retention, keep_local=keep_local
        )
        counts["offsite_objects"] = len(remote.objects)
        counts["offsite_bytes"] = sum(o.size for o in remote.objects)
    return counts


def _backup_expire(args: argparse.Namespace, settings: Settings) -> Counts:
    backup_dir = settings.require_backup_dir()
    storage = offsite.configured(os.environ)
    retention, now = settings.backup_retention(), datetime.now(UTC)
    deleted = expire_backups(backup_dir, retention, now=now)
    counts: Counts = {
        "expired_deleted": len(deleted),
        "backups_kept": len(list_backups(backup_dir)),
    }
    if storage is not None:
        # Needs no key: the off-site copies expire on the same budget as the local ones.
        gone = offsite.expire_remote_backups(storage, retention, now=now)
        counts["offsite_expired_deleted"] = len(gone)
        counts["offsite_backups_kept"] = len(offsite.list_remote_backups(storage))
    return counts


def _downloaded(reference: str, settings: Settings) -> Path:
    """An off-site backup (`s3:<id>` or `s3:latest`) fetched and decrypted under BACKUP_DIR
    (resumable; expired there on schedule like any backup): its local directory."""
    storage = offsite.configured(os.environ)
    if storage is None:
        raise SettingsError(f"{offsite.REMOTE}{reference} names an off-site backup: set S3_*")
    identities = offsite.identities_from_env(os.environ)
    return offsite.download_backup(storage, reference, settings.require_backup_dir(), identities)


def _restore(args: argparse.Namespace, settings: Settings) -> Counts:
    remote = offsite.remote_reference(args.source)
    if remote is not None:
        path = _downloaded(remote, settings)
    else:
        path = resolve_backup(settings.backup_dir, args.source)
    result = restore(
        connect(settings),
        path,
        mapping=parse_mapping(args.database),
        concurrency=settings.backup_concurrency,
        keep=settings.purge_cutoff(datetime.now(UTC)),
    )
    return {k: float(v) for k, v in result.items()}


def _verify(args: argparse.Namespace, settings: Settings) -> Counts:
    remote = offsite.remote_reference(args.backup)
    if remote is not None and not os.environ.get("BACKUP_AGE_IDENTITY_FILE"):
        # Without the key (the cluster never has it): the stored ciphertext against its index.
        if args.live:
            raise SettingsError(
                "verify --live of an off-site backup needs BACKUP_AGE_IDENTITY_FILE"
            )
        storage = offsite.configured(os.environ)
        if storage is None:
            raise SettingsError(f"{args.backup} names an off-site backup: set S3_*")
        checked = offsite.check_remote_backup(storage, remote)
        return {"objects_checked": len(checked.objects), "decrypted": 0}
    path = (
        _downloaded(remote, settings)
        if remote is not None
        else resolve_backup(settings.backup_dir, args.backup)
    )
    result = verify(
        path,
        couch=connect(settings) if args.live else None,
        mapping=parse_mapping(args.database),
        live=args.live,
        keep=settings.purge_cutoff(datetime.now(UTC)),
    )
    return {k: float(v) for k, v in result.items()}


def _whois(args: argparse.Namespace, settings: Settings) -> Counts:
    name = pseudonym.whois(args.pseudonym, connect(settings).all_dbs())
    if name is None:
        raise OpsError(f"no database of the server has the pseudonym {args.pseudonym}")
    # The one place couchops prints a database's name: an operator asked for it, on a shell.
    print(name, flush=True)
    return {}


def _consolidate(args: argparse.Namespace, settings: Settings) -> Counts:
    if settings.user_partition_secret is None:
        raise SettingsError(
            "consolidate needs USER_PARTITION_SECRET or USER_PARTITION_SECRET_FILE: the key "
            "that turns user names into partition pseudonyms (shared with the web application)"
        )
    stats = consolidate(
        connect(settings),
        settings.database,
        settings.user_partition_secret.get_secret_value().encode("utf-8"),
        concurrency=settings.consolidate_concurrency,
        delete_sources=args.delete_sources,
        limit=args.limit,
        only=args.source,
    )
    if stats.failures:
        raise OpsError(
            f"{stats.sources_failed + stats.sources_invalid_name} of "
            f"{stats.sources + stats.sources_invalid_name} sources not migrated; first: "
            f"{stats.failures[0]}"
        )
    return stats.counts()


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Counts]] = {
    "cluster-setup": _cluster_setup,
    "purge": _purge,
    "backup": _backup,
    "restore": _restore,
    "verify": _verify,
    "consolidate": _consolidate,
    "backup-expire": _backup_expire,
    "whois": _whois,
    "audit": _audit,
}


def _run(operation: str, args: argparse.Namespace, settings: Settings | None) -> int:
    """One operation: its settings (unless given), its metrics pushed, its outcome printed
    (a JSON line of counts, or one line naming the problem); answers the exit code."""
    log = logger().bind(operation=operation)
    started = time.monotonic()
    counts: Counts = {}
    code = 0
    reason = ""
    try:
        if settings is None:
            settings = load_settings(os.environ, _overrides(args), FLAGS)
            pseudonym.keep_clear([settings.database])
            log.info("couchops.start", version=__version__, couchdb=settings.couchdb_url)
        counts = COMMANDS[operation](args, settings)
    except PartialFailure as exc:
        code, reason, counts = exc.exit_code, str(exc), exc.counts
    except OpsError as exc:
        code, reason = exc.exit_code, str(exc)
    except KeyboardInterrupt:
        code, reason = 130, "interrupted"
    except Exception as exc:
        log.exception("couchops.internal_error")
        code, reason = 70, f"internal error: {type(exc).__name__}: {exc}"
    duration = time.monotonic() - started
    environment = settings.environment if settings else os.environ.get("ENVIRONMENT", "dev")
    gateway = settings.pushgateway_url if settings else os.environ.get("PUSHGATEWAY_URL")
    registry = build_registry(
        operation, success=code == 0, duration_seconds=duration, counts=counts
    )
    push(gateway or None, operation, environment, registry, scope=getattr(args, "scope", None))
    if code:
        log.error("couchops.failed", reason=reason, exit_code=code)
        print(f"couchops {operation}: {pseudonym.scrub(reason)}", file=sys.stderr, flush=True)
        return code
    log.info("couchops.succeeded", duration_seconds=round(duration, 3))
    print(json.dumps({"operation": operation, "ok": True, **counts}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    operation: str = args.command
    configure(args.log_level, operation=operation)
    code = _run(operation, args, None)
    if operation == "purge" and not args.dry_run and not args.no_audit and code in (0, 1):
        # Every purge is proven by an audit with its own cutoff, reported as its own
        # operation: a purge that failed on one database is audited on the others too (not
        # one stopped by a bad setting or an unreachable server: that is alerted already).
        args.after_purge = True
        settings = load_settings(os.environ, _overrides(args), FLAGS)
        audit_code = _run("audit", args, settings)
        code = code or audit_code
    if operation == "backup" and code == 0:
        # The backups are audited where they are, by the one job that mounts them, each night.
        args.scope = "backups"
        settings = load_settings(os.environ, _overrides(args), FLAGS)
        code = _run("audit", args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
