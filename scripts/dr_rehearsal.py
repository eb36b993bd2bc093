#!/usr/bin/env python3
"""Disaster-recovery rehearsal: the environment is lost, rebuilt with `pulumi up`, its data
restored from object storage, verified, and the web app's user reads and writes again. Each
step is timed; the last line printed is a JSON summary (runbooks/disaster-recovery.md).

    scripts/dr_rehearsal.py --kubeconfig K --couchdb-url U --admin-password-file F \\
        --s3-endpoint E --s3-access-key-file A --s3-secret-key-file S --bucket B \\
        [--prospects 50000] [--work DIR]

What plays what:
- Kubernetes: the cluster of KUBECONFIG (scripts/kube-up.sh: a real control plane with KWOK
  nodes; pods are not run there). The real Pulumi CLI deploys the prod stack to it (a copy of
  the program with its own state in --work, `backup.objectStorage` and `escrowRecipient` set
  to the rehearsal's bucket and keys).
- CouchDB: the server at --couchdb-url stands in for the CouchDB pods (a real 3-node CouchDB,
  or pouchdb-server, which lacks `_membership`: `cluster-setup` is then replaced by creating
  the database and the app user directly, and said so).
- The jobs: couchops runs here, with the environment of the CronJob or Job the stack deployed
  (read from the API), the stand-in's address and admin in place of the in-cluster ones, and
  the Secrets' values (read from the API) in place of their mounted files.
- Object storage: the S3-compatible server at --s3-endpoint (SeaweedFS in the tests).

Phases: before (deploy, set up, the prospects' data written as the app user, a backup sent
off site), the disaster (the namespace deleted with everything in it, the database and the
app user dropped, the backup volume emptied), the recovery, timed (`pulumi up --refresh`, the
provider's object-storage Secret recreated, cluster-setup, restore from `s3:latest`, verify
live, the app user reads every prospect's documents of a sample and writes one).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import yaml
from pyrage import x25519  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from couchops.partition import partition_key  # noqa: E402
from couchops.timestamps import iso  # noqa: E402
from infra.schedules import longest_gap  # noqa: E402

_spec = importlib.util.spec_from_file_location("kubeapi", REPO / "scripts" / "kube" / "kubeapi.py")
assert _spec is not None and _spec.loader is not None
kubeapi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kubeapi)

STACK = "prod"
PASSPHRASE = "dr-rehearsal-only"  # noqa: S105 (a throwaway local state)
CREDENTIALS_SECRET = "object-storage-credentials"  # noqa: S105 (a Secret's name)
DOCS_PER_PROSPECT = 6
STEPS = ("identity", "contact", "situation", "income", "documents", "signature")


def log(message: str) -> None:
    print(f"[dr-rehearsal {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class RehearsalFailed(RuntimeError):
    """A step did not give what a recovery needs; the message names it."""


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        log(f"{name} ...")
        start = time.monotonic()
        yield
        self.steps[name] = round(time.monotonic() - start, 1)
        log(f"{name}: {self.steps[name]:.1f}s")


@dataclass
class Rehearsal:
    args: argparse.Namespace
    work: Path
    project: Path
    env: dict[str, str]
    api: Any
    admin: tuple[str, str]
    identity: Any
    timings: Timings = field(default_factory=Timings)
    namespace: str = ""
    database: str = ""

    # -- the program -------------------------------------------------------------------------

    def pulumi(self, *args: str) -> str:
        done = subprocess.run(
            ["pulumi", "--non-interactive", *args, "--stack", STACK],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode:
            raise RehearsalFailed(f"pulumi {args[0]} failed:\n{done.stdout[-3000:]}{done.stderr}")
        return done.stdout

    def secret(self, name: str) -> dict[str, str]:
        data = self.api.get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def provider_secret(self) -> None:
        """What the hosting provider creates beside the stack: the bucket's credentials."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": CREDENTIALS_SECRET, "namespace": self.namespace},
            "stringData": {
                "accessKeyId": read(self.args.s3_access_key_file),
                "secretAccessKey": read(self.args.s3_secret_key_file),
            },
        }
        self.api.apply(f"/api/v1/namespaces/{self.namespace}/secrets/{CREDENTIALS_SECRET}", body)

    def job_env(self, kind: str, component: str) -> dict[str, str]:
        """The environment the stack gave a Job or CronJob, as couchops here is to see it:
        plain values kept, the in-cluster CouchDB replaced by the stand-in."""
        path = {"Job": "/apis/batch/v1/namespaces/{ns}/jobs"}.get(
            kind, "/apis/batch/v1/namespaces/{ns}/cronjobs"
        )
        items = self.api.items(
            path.format(ns=self.namespace),
            labelSelector=f"app.kubernetes.io/component={component}",
        )
        if not items:
            raise RehearsalFailed(f"no {kind} {component} in namespace {self.namespace}")
        spec = items[-1]["spec"]
        pod = (spec["jobTemplate"]["spec"] if kind == "CronJob" else spec)["template"]["spec"]
        env = {e["name"]: e["value"] for e in pod["containers"][0].get("env", []) if "value" in e}
        for name in [k for k in env if k.endswith("_FILE")] + ["COUCHDB_NODE_URLS"]:
            env.pop(name, None)
        env.update(
            COUCHDB_URL=self.args.couchdb_url,
            COUCHDB_ADMIN_USER=self.admin[0],
            COUCHDB_ADMIN_PASSWORD=self.admin[1],
            PUSHGATEWAY_URL="",
            ENVIRONMENT=STACK,
        )
        if self.args.node_urls:
            env["COUCHDB_NODE_URLS"] = self.args.node_urls
        return env

    def couchops(self, env: dict[str, str], *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "couchops.cli", *args],
            cwd=REPO,
            env={"PATH": os.environ["PATH"], "LOG_LEVEL": "WARNING", **env},
            capture_output=True,
            text=True,
            timeout=6 * 3600,
            check=False,
        )
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        own = [x for x in lines if x.get("operation") == args[0]]
        if done.returncode or not own:
            raise RehearsalFailed(f"couchops {' '.join(args)}: {done.stderr.strip()[-1500:]}")
        result: dict[str, Any] = own[-1]
        return result

    # -- CouchDB -----------------------------------------------------------------------------

    def couch(
        self, method: str, path: str, auth: tuple[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        return requests.request(
            method, f"{self.args.couchdb_url}{path}", auth=auth or self.admin, timeout=300, **kw
        )

    def is_couchdb(self) -> bool:
        return "couchdb" in self.couch("GET", "/").json()

    def set_up(self, app: dict[str, str]) -> str:
        """The setup Job: `couchops cluster-setup` with its environment and the app Secret."""
        env = self.job_env("Job", "cluster-setup")
        env.update(COUCHDB_APP_USER=app["username"], COUCHDB_APP_PASSWORD=app["password"])
        if self.is_couchdb():
            members = self.couch("GET", "/_membership").json()["cluster_nodes"]
            env.update(COUCHDB_NODES=",".join(members), COUCHDB_REPLICAS=str(len(members)))
            self.couchops(env, "cluster-setup")
            return "couchops cluster-setup"
        # pouchdb-server: no _membership nor _cluster_setup; what the Job creates, directly.
        self.couch("PUT", f"/{env['COUCHDB_DATABASE']}")
        user = {"name": app["username"], "password": app["password"], "roles": [], "type": "user"}
        found = self.couch("GET", f"/_users/org.couchdb.user:{app['username']}")
        if found.ok:
            user["_rev"] = found.json()["_rev"]
        self.couch("PUT", f"/_users/org.couchdb.user:{app['username']}", json=user)
        return "database and app user created directly (pouchdb-server has no _membership)"

    def require_absent(self) -> None:
        if self.couch("GET", f"/{self.database}").status_code != 404:
            raise RehearsalFailed(
                f"database {self.database} already exists on {self.args.couchdb_url}: the "
                "rehearsal writes its own data there and loses it; use a server without it "
                "(or drop it first)"
            )

    def partitioned(self) -> bool:
        return bool(
            self.couch("GET", f"/{self.database}").json().get("props", {}).get("partitioned")
        )

    # -- the web app's user ------------------------------------------------------------------

    def prospect_docs(self, rng: random.Random, email: str, secret: bytes) -> list[dict[str, Any]]:
        partition = partition_key(email, secret)
        created = datetime.now(UTC) - timedelta(days=rng.uniform(0, 20))
        docs: list[dict[str, Any]] = []
        for index, kind in enumerate(
            ("profile", "application", "consent", "step", "step", "document")
        ):
            doc: dict[str, Any] = {
                "_id": f"{partition}:{index:02d}-{kind}",
                "type": kind,
                "createdAt": iso(created + timedelta(minutes=index)),
                "step": rng.choice(STEPS),
                "status": rng.choice(("draft", "submitted", "in-review")),
                "answers": {"incomeBand": rng.choice("ABCDE"), "housing": "tenant"},
            }
            if kind == "document" and rng.random() < self.args.attachment_share:
                size = int(rng.uniform(0.5, 1.5) * self.args.attachment_kb * 1024)
                doc["_attachments"] = {
                    "scan.jpg": {
                        "content_type": "image/jpeg",
                        "data": base64.b64encode(rng.randbytes(size)).decode(),
                    }
                }
            docs.append(doc)
        return docs

    def write_prospects(self, app: dict[str, str]) -> tuple[int, int]:
        """Every prospect's documents, written as the web app does: as its user, in the
        prospect's pseudonymous partition. Answers (documents, attachments)."""
        secret = app["partitionSecret"].encode()
        auth = (app["username"], app["password"])
        counts = [0, 0]

        def batch(start: int) -> None:
            rng = random.Random(start)  # noqa: S311 (test data, not secrets)
            docs = [
                d
                for p in range(start, min(start + 100, self.args.prospects))
                for d in self.prospect_docs(rng, email(p), secret)
            ]
            answer = self.couch("POST", f"/{self.database}/_bulk_docs", auth, json={"docs": docs})
            # 202: accepted by fewer copies than the quorum yet (a loaded cluster), not lost.
            if answer.status_code not in (201, 202) or any("error" in r for r in answer.json()):
                raise RehearsalFailed(f"the app user could not write: {answer.text[:300]}")
            counts[0] += len(docs)
            counts[1] += sum(1 for d in docs if "_attachments" in d)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(batch, range(0, self.args.prospects, 100)))
        return counts[0], counts[1]

    def app_reads_and_writes(self, app: dict[str, str], sample: int) -> int:
        """A sample of prospects, each found by e-mail as the web app finds them (partition
        key from the app Secret): all their documents there; then a new one written and read."""
        secret = app["partitionSecret"].encode()
        auth = (app["username"], app["password"])
        rng = random.Random(7)  # noqa: S311 (a sample, not a secret)
        for p in rng.sample(range(self.args.prospects), min(sample, self.args.prospects)):
            partition = partition_key(email(p), secret)
            if self.partitioned():
                path = f"/{self.database}/_partition/{partition}/_all_docs"
                params: dict[str, str] = {}
            else:
                path = f"/{self.database}/_all_docs"
                params = {
                    "startkey": json.dumps(f"{partition}:"),
                    "endkey": json.dumps(f"{partition};"),
                }
            rows = self.couch("GET", path, auth, params=params).json().get("rows", [])
            if len(rows) != DOCS_PER_PROSPECT:
                raise RehearsalFailed(
                    f"prospect {p}: the app user finds {len(rows)} documents in its partition, "
                    f"{DOCS_PER_PROSPECT} were written before the disaster"
                )
            new = {
                "_id": f"{partition}:99-after-recovery",
                "type": "step",
                "createdAt": iso(datetime.now(UTC)),
            }
            wrote = self.couch("PUT", f"/{self.database}/{new['_id']}", auth, json=new)
            if wrote.status_code not in (201, 202):
                raise RehearsalFailed(f"the app user cannot write after the recovery: {wrote.text}")
            if self.couch("GET", f"/{self.database}/{new['_id']}", auth).status_code != 200:
                raise RehearsalFailed("the app user cannot read back what it wrote")
        return sample

    # -- the disaster ------------------------------------------------------------------------

    def lose_everything(self, app_user: str) -> None:
        self.api.delete(f"/api/v1/namespaces/{self.namespace}")
        deadline = time.monotonic() + 600
        while self.api.get_or_none(f"/api/v1/namespaces/{self.namespace}") is not None:
            if time.monotonic() > deadline:
                raise RehearsalFailed(f"namespace {self.namespace} still there after 10 minutes")
            time.sleep(2)
        self.couch("DELETE", f"/{self.database}")
        found = self.couch("GET", f"/_users/org.couchdb.user:{app_user}")
        if found.ok:
            self.couch(
                "DELETE",
                f"/_users/org.couchdb.user:{app_user}",
                params={"rev": found.json()["_rev"]},
            )
        shutil.rmtree(self.work / "backup-volume", ignore_errors=True)
        if self.couch("GET", f"/{self.database}").status_code != 404:
            raise RehearsalFailed(f"database {self.database} survived the disaster")


def email(index: int) -> str:
    return f"prospect{index:06d}@example.fr"


def read(path: str) -> str:
    return Path(path).read_text().strip()


def copy_project(work: Path, args: argparse.Namespace, recipient: str) -> Path:
    """The program, with the stack file of the rehearsal: off-site backups to its bucket."""
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for package in ("infra", "components", "stacks", "monitoring", "supervision"):
        shutil.copytree(
            REPO / package, project / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(REPO / "Pulumi.yaml", project / "Pulumi.yaml")
    (project / ".venv").symlink_to(REPO / ".venv")
    stack = yaml.safe_load((REPO / f"Pulumi.{STACK}.yaml").read_text())
    config = stack["config"]
    config["onboarding:backup"]["objectStorage"] = {
        "endpoint": args.s3_endpoint,
        "bucket": args.bucket,
        "region": "fr-par",
        "prefix": "rehearsal/",
        "credentialsSecret": CREDENTIALS_SECRET,
        "recipients": [recipient],
    }
    config["onboarding:escrowRecipient"] = recipient
    # A deploy needs the kube context named in the stack config (infra/config.py): the
    # rehearsal's cluster is the one its --kubeconfig selects.
    config["onboarding:kubeContext"] = yaml.safe_load(Path(args.kubeconfig).read_text())[
        "current-context"
    ]
    (project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack, sort_keys=False))
    return project


def pulumi_env(work: Path, kubeconfig: str) -> dict[str, str]:
    version = next(
        line.split("=", 1)[1].strip()
        for line in (REPO / "scripts" / "bootstrap-toolchain.sh").read_text().splitlines()
        if line.startswith("PULUMI_VERSION=")
    )
    cache = Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "ONBOARDING_")) and k not in {"KUBECONFIG", "VIRTUAL_ENV"}
    }
    (work / "state").mkdir(parents=True, exist_ok=True)
    env.update(
        PATH=f"{cache / f'pulumi-{version}' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PULUMI_HOME=str(work / "pulumi-home"),
        PULUMI_BACKEND_URL=f"file://{work / 'state'}",
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        KUBECONFIG=kubeconfig,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def rpo(project: Path, backup_seconds: float) -> dict[str, Any]:
    """The most data a disaster can take: everything written since the last backup that
    reached object storage, i.e. the longest gap between two backup runs plus one run."""
    config = yaml.safe_load((project / f"Pulumi.{STACK}.yaml").read_text())["config"]
    gap = longest_gap(
        config["onboarding:backup"]["schedule"], config.get("onboarding:timeZone", "Europe/Paris")
    )
    hours = gap.length / timedelta(hours=1)
    return {
        "schedule": config["onboarding:backup"]["schedule"],
        "longest_gap_hours": hours,
        "rpo_hours": round(hours + backup_seconds / 3600, 2),
    }


def new_identity(work: Path) -> tuple[Any, Path]:
    """The rehearsal's operations key: backups are encrypted to its public half."""
    identity = x25519.Identity.generate()
    path = work / "ops.key"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return identity, path


def rehearse(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    identity, identity_file = new_identity(work)
    project = copy_project(work, args, str(identity.to_public()))
    env = pulumi_env(work, args.kubeconfig)
    admin = (args.admin_user, read(args.admin_password_file))
    r = Rehearsal(args, work, project, env, kubeapi.KubeAPI(args.kubeconfig), admin, identity)
    t = r.timings

    # -- before ------------------------------------------------------------------------------
    r.pulumi("stack", "init", "--secrets-provider", "passphrase")
    with t.step("before: pulumi up"):
        r.pulumi("up", "--yes", "--skip-preview")
    outputs = json.loads(r.pulumi("stack", "output", "--json", "--show-secrets"))
    r.namespace = outputs["namespace"]
    app = r.secret("couchdb-app")
    r.provider_secret()
    r.database = r.job_env("Job", "cluster-setup")["COUCHDB_DATABASE"]
    r.require_absent()
    setup_how = r.set_up(app)
    with t.step("before: the app user writes the prospects' data"):
        documents, attachments = r.write_prospects(app)
    volume = work / "backup-volume"
    backup_env = {**r.job_env("CronJob", "backup"), "BACKUP_DIR": str(volume)}
    backup_env.update(
        S3_ACCESS_KEY_ID=read(args.s3_access_key_file),
        S3_SECRET_ACCESS_KEY=read(args.s3_secret_key_file),
    )
    with t.step("before: backup sent off site"):
        backed_up = r.couchops(backup_env, "backup")
    escrow = outputs.get("keyEscrow")

    # -- the disaster --------------------------------------------------------------------------
    with t.step("disaster: namespace, database, app user and backup volume lost"):
        r.lose_everything(app["username"])

    # -- the recovery (timed) ------------------------------------------------------------------
    start = time.monotonic()
    with t.step("recovery: pulumi up --refresh"):
        r.pulumi("up", "--yes", "--refresh", "--skip-preview")
    with t.step("recovery: object-storage Secret recreated, cluster-setup"):
        r.provider_secret()
        back = r.secret("couchdb-app")
        if back["partitionSecret"] != app["partitionSecret"]:
            raise RehearsalFailed("the rebuilt app Secret has another partition key")
        r.set_up(back)
    restore_env = {
        **backup_env,
        "BACKUP_DIR": str(work / "restore-volume"),
        "BACKUP_AGE_IDENTITY_FILE": str(identity_file),
    }
    with t.step("recovery: restore from s3:latest (download, decrypt, write)"):
        restored = r.couchops(restore_env, "restore", "--from", "s3:latest")
    with t.step("recovery: verify --live"):
        verified = r.couchops(restore_env, "verify", "--backup", "s3:latest", "--live")
    with t.step("recovery: the app user reads and writes"):
        sampled = r.app_reads_and_writes(back, args.sample)
    recovery = round(time.monotonic() - start, 1)

    summary = {
        "prospects": args.prospects,
        "documents": documents,
        "attachments": attachments,
        "attachment_kb_mean": args.attachment_kb,
        "backup_documents": backed_up["documents"],
        "backup_bytes": backed_up["bytes"],
        "offsite_bytes": backed_up.get("offsite_bytes"),
        "setup": setup_how,
        "restored_documents": restored.get("documents"),
        "verified_documents": verified.get("documents"),
        "prospects_read_and_written": sampled,
        "key_escrow_output": bool(escrow),
        "steps_seconds": t.steps,
        "recovery_seconds": recovery,
        **rpo(project, t.steps["before: backup sent off site"]),
    }
    # The backup holds the prospects' documents and the setup's design documents (indexes),
    # which the restore keeps as the rebuilt setup made them.
    if backed_up["documents"] < documents or verified.get("documents") != backed_up["documents"]:
        raise RehearsalFailed(
            f"the backup ({backed_up['documents']}) or the verified database "
            f"({verified.get('documents')}) does not hold the {documents} documents written: "
            f"{summary}"
        )
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--couchdb-url", required=True)
    p.add_argument("--admin-user", default="admin")
    p.add_argument("--admin-password-file", required=True)
    p.add_argument(
        "--node-urls", default="", help="the stand-in's node-local URLs, comma separated"
    )
    p.add_argument("--s3-endpoint", required=True)
    p.add_argument("--s3-access-key-file", required=True)
    p.add_argument("--s3-secret-key-file", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prospects", type=int, default=50_000)
    p.add_argument("--attachment-share", type=float, default=0.3, help="prospects with a scan")
    p.add_argument("--attachment-kb", type=float, default=100, help="mean scan size")
    p.add_argument("--sample", type=int, default=50, help="prospects the app user checks")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "onboarding-dr-rehearsal"))
    args = p.parse_args()
    try:
        summary = rehearse(args)
    except RehearsalFailed as exc:
        print(f"dr-rehearsal: FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
