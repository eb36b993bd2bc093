"""State safety with the real engine (runbooks/state-safety.md): what `pulumi destroy` and
`pulumi up` refuse to delete or replace, the key escrow taken back after a lost state, and a
password rotation.

The real CLI and providers of tests/integration/test_pulumi_cli.py run the program in render
mode, on preprod (the smaller stack) in copies of the project, each with its own local
backend. The destroy and the refusals have a stack each; the escrow and the rotations share
one, each test reading its own "before" from it.

Skipped, with the reason, when the toolchain or the virtualenv is not there (the import below).
"""

from __future__ import annotations

import base64
import configparser
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyrage import decrypt, x25519  # type: ignore[import-untyped]

from tests.integration import test_pulumi_cli as cli
from tests.integration.manifest_check import load_manifests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The fixture's copy of the project stays as made: every stack below runs in a copy of it.
project = cli.project

STACK = "preprod"
# What the issue requires to be protected, by resource name: the keys that give the data its
# meaning, the Secrets holding them, the objects that hold the data.
PROTECTED = {
    f"{STACK}-couchdb-partition-secret",
    f"{STACK}-couchdb-erlang-cookie",
    f"{STACK}-couchdb-uuid",
    f"{STACK}-couchdb-auth-secret",
    f"{STACK}-couchdb-keys-pin",
    f"{STACK}-couchdb-server-secret",
    f"{STACK}-couchdb-app-secret",
    f"{STACK}-couchdb-statefulset",
    f"{STACK}-backups-volume",
}
KEYS = {
    "partitionSecret": f"{STACK}-couchdb-partition-secret",
    "erlangCookie": f"{STACK}-couchdb-erlang-cookie",
    "uuid": f"{STACK}-couchdb-uuid",
    "authSecret": f"{STACK}-couchdb-auth-secret",
}
# The engine's refusals, as it words them (pulumi 3.259).
NOT_DELETED = re.compile(
    r'resource "(urn:pulumi:[^"]+)" cannot be deleted\s+because it is protected'
)
NOT_REPLACED = re.compile(
    r'unable to replace resource "(urn:pulumi:[^"]+)"\s+as it is currently marked for protection'
)
# Operations that would take an object away, in `pulumi preview --json` steps.
REMOVING = {"delete", "replace", "create-replacement", "delete-replaced", "discard"}


def name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


@dataclass
class Box:
    """One stack, in its own copy of the project, with its own backend."""

    project: Path
    env: dict[str, str]

    @property
    def rendered(self) -> Path:
        return self.project / "rendered" / STACK

    def run(self, *args: str, check: bool = True, stdin: str | None = None) -> Result:
        if stdin is None:
            done = cli.pulumi(self.project, self.env, *args, check=check)
        else:
            # Piped, as the runbook does: the value is on no command line.
            done = subprocess.run(
                [str(cli.BIN / "pulumi"), "--non-interactive", *args],
                cwd=self.project,
                env=self.env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0 or not check, done.stdout + done.stderr
        return Result(done.returncode, done.stdout, done.stderr)

    def up(self) -> Result:
        return self.run("up", "--yes", "--skip-preview")

    def state(self, *, secrets: bool = False) -> list[dict[str, Any]]:
        shown = ["--show-secrets"] if secrets else []
        exported = json.loads(self.run("stack", "export", *shown).stdout)
        resources: list[dict[str, Any]] = exported["deployment"].get("resources", [])
        return resources

    def protected(self) -> set[str]:
        return {r["urn"] for r in self.state() if r.get("protect")}

    def preview(self) -> dict[str, Any]:
        done = self.run("preview", "--diff", "--json", check=False)
        preview: dict[str, Any] = json.loads(done.stdout)
        preview["returncode"] = done.returncode
        return preview

    def secret(self, name: str) -> dict[str, str]:
        """A rendered Secret's values, decoded: what the pods are given."""
        (found,) = [
            m
            for _, m in load_manifests(self.rendered)
            if m.get("kind") == "Secret" and m["metadata"]["name"] == name
        ]
        return {k: base64.b64decode(v).decode() for k, v in found["data"].items()}

    def manifest(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [
            m
            for _, m in load_manifests(self.rendered)
            if m.get("kind") == kind and m["metadata"]["name"] == name
        ]
        return found

    def held_keys(self) -> dict[str, str]:
        """The keys as the rendered Secrets give them to the cluster and the site."""
        server = self.secret("couchdb-server")
        ini = configparser.ConfigParser(strict=True)
        ini.read_string(server["20-secrets.ini"])
        return {
            "partitionSecret": self.secret("couchdb-app")["partitionSecret"],
            "erlangCookie": server["erlangCookie"],
            "uuid": ini.get("couchdb", "uuid"),
            "authSecret": ini.get("chttpd_auth", "secret"),
        }


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture(scope="module")
def new_box(
    project: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Box]:
    """Makes a new stack in a new copy of the project: a new backend, nothing shared."""
    pristine, _ = project

    def make(escrow_recipient: str | None = None) -> Box:
        base = tmp_path_factory.mktemp("state-safety")
        copy = base / "project"
        shutil.copytree(
            pristine, copy, symlinks=True, ignore=shutil.ignore_patterns("rendered", "__pycache__")
        )
        (base / "state").mkdir()
        box = Box(copy, cli._env(base / "state"))
        box.run("stack", "init", STACK, "--secrets-provider", "passphrase")
        if escrow_recipient is not None:
            box.run("config", "set", "onboarding:escrowRecipient", escrow_recipient)
        return box

    return make


@pytest.fixture(scope="module")
def identity() -> Any:
    """The bank's escrow key pair (age X25519), as `age-keygen` would make it."""
    return x25519.Identity.generate()


@pytest.fixture(scope="module")
def escrowed(new_box: Callable[..., Box], identity: Any) -> Box:
    box = new_box(str(identity.to_public()))
    box.up()
    return box


def test_destroy_stops_at_every_protected_resource_and_deletes_none_of_them(
    new_box: Callable[..., Box],
) -> None:
    box = new_box()
    box.up()
    protected = box.protected()
    assert {name_of(urn) for urn in protected} == PROTECTED
    everything = {r["urn"] for r in box.state()}

    # With its preview (the default), destroy fails before deleting anything.
    refused = box.run("destroy", "--yes", check=False)
    assert refused.returncode != 0
    named = set(NOT_DELETED.findall(refused.output))
    assert named and named <= protected, refused.output
    assert {r["urn"] for r in box.state()} == everything

    # Without it, destroy deletes what is not protected, then stops: the protected remain
    # (and what they need), in the state and as objects.
    forced = box.run("destroy", "--yes", "--skip-preview", check=False)
    assert forced.returncode != 0
    remaining = {r["urn"] for r in box.state()}
    assert protected <= remaining < everything
    assert box.manifest("StatefulSet", "couchdb")
    assert box.manifest("PersistentVolumeClaim", "couchdb-backups")

    # Each protected resource stops a destroy on its own: unprotect the ones a destroy named,
    # and the next destroy names others, until every one has been named.
    stopped_by: set[str] = set()
    while named - stopped_by:
        stopped_by |= named
        box.run("state", "unprotect", "--yes", *sorted(named))
        again = box.run("destroy", "--yes", check=False)
        if again.returncode == 0:
            break
        named = set(NOT_DELETED.findall(again.output))
        assert named, again.output
        assert {r["urn"] for r in box.state()} == remaining
    assert stopped_by == protected

    # Once all are unprotected the destroy went through, and the data claims stay: the backup
    # claim and the namespace (with the StatefulSet's claims in it) are retained on delete.
    assert box.state() == []
    left = {(m["kind"], m["metadata"]["name"]) for _, m in load_manifests(box.rendered)}
    assert left == {
        ("PersistentVolumeClaim", "couchdb-backups"),
        ("Namespace", f"onboarding-{STACK}"),
    }


def test_up_refuses_to_replace_a_key_or_drop_its_generator(new_box: Callable[..., Box]) -> None:
    box = new_box()
    box.up()
    before = box.state(secrets=True)
    keys = box.held_keys()
    program = box.project / "components" / "couchdb_cluster.py"
    source = program.read_text()

    # A longer partition key in the program means a new key: the engine refuses the replace.
    assert source.count('key("partition-secret", 64,') == 1
    program.write_text(source.replace('key("partition-secret", 64,', 'key("partition-secret", 72,'))
    longer = box.run("up", "--yes", check=False)
    program.write_text(source)
    assert longer.returncode != 0
    assert {name_of(u) for u in NOT_REPLACED.findall(longer.output)} >= {KEYS["partitionSecret"]}
    assert box.state(secrets=True) == before

    # restoredKeys on a stack that generated its keys drops the generator from the program:
    # the engine refuses to delete it, even for the very same value.
    box.run(
        "config",
        "set",
        "--secret",
        "--path",
        "onboarding:restoredKeys.partitionSecret",
        keys["partitionSecret"],
    )
    dropped = box.run("up", "--yes", check=False)
    assert dropped.returncode != 0
    assert {name_of(u) for u in NOT_DELETED.findall(dropped.output)} == {KEYS["partitionSecret"]}
    assert box.state(secrets=True) == before

    # The runbook's way out, for a restored value equal to the generated one: unprotect the
    # generator, and the next up deletes only it; the Secrets keep the same keys.
    (generator,) = [r["urn"] for r in before if name_of(r["urn"]) == KEYS["partitionSecret"]]
    box.run("state", "unprotect", "--yes", generator)
    steps = box.preview()
    assert steps["returncode"] == 0
    changed = {(s["op"], name_of(s["urn"])) for s in steps["steps"] if s["op"] != "same"}
    assert changed == {("delete", KEYS["partitionSecret"])}
    box.up()
    assert box.held_keys() == keys
    assert KEYS["partitionSecret"] not in {name_of(r["urn"]) for r in box.state()}


def test_the_escrow_holds_the_keys_and_restores_them_on_a_new_stack(
    escrowed: Box, new_box: Callable[..., Box], identity: Any
) -> None:
    escrow = escrowed.run("stack", "output", "keyEscrow", "--show-secrets").stdout.strip()
    assert escrow.startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    plain = decrypt(escrow.encode(), [identity]).decode()
    opened = json.loads(plain)
    assert opened.pop("format") == "onboarding-key-escrow/1"
    assert opened.pop("environment") == STACK
    held = escrowed.held_keys()
    assert opened == held
    assert len(held["partitionSecret"]) == 64

    # The state is lost: a new stack, in a new backend, takes the decrypted escrow as is.
    lost = new_box(str(identity.to_public()))
    lost.run("config", "set", "--secret", "onboarding:restoredKeys", stdin=plain)
    stack_file = (lost.project / f"Pulumi.{STACK}.yaml").read_text()
    assert all(value not in stack_file for value in held.values())
    lost.up()
    assert lost.held_keys() == held
    # No key was generated, and the new stack's own escrow opens to the same keys.
    generated = {name_of(r["urn"]) for r in lost.state()}
    assert not set(KEYS.values()) & generated
    again = lost.run("stack", "output", "keyEscrow", "--show-secrets").stdout.strip()
    reopened = json.loads(decrypt(again.encode(), [identity]))
    assert {k: reopened[k] for k in held} == held
    # The passwords are the new stack's own: the setup Job sets them on the users.
    assert lost.secret("couchdb-app")["password"] != escrowed.secret("couchdb-app")["password"]

    # Restored for good: without the setting the program would generate other keys, and the
    # engine refuses the replacement that takes.
    lost.run("config", "rm", "onboarding:restoredKeys")
    dropped = lost.run("up", "--yes", check=False)
    assert dropped.returncode != 0
    assert NOT_REPLACED.search(dropped.output), dropped.output
    assert lost.held_keys() == held


def test_every_escrow_taken_opens_to_the_same_keys_and_no_preview_reports_it(
    escrowed: Box, identity: Any
) -> None:
    """age encryption is randomized: each `up` exports another ciphertext of the same keys,
    which a preview does not count as a change. Any copy the bank kept stays good."""
    first = escrowed.run("stack", "output", "keyEscrow", "--show-secrets").stdout.strip()
    assert escrowed.run("preview", "--expect-no-changes", check=False).returncode == 0
    escrowed.up()
    second = escrowed.run("stack", "output", "keyEscrow", "--show-secrets").stdout.strip()
    assert decrypt(first.encode(), [identity]) == decrypt(second.encode(), [identity])


def test_rotating_the_app_password_rolls_its_users_and_replaces_nothing_protected(
    escrowed: Box,
) -> None:
    protected = escrowed.protected()
    before = escrowed.secret("couchdb-app")
    keys = escrowed.held_keys()
    job_before = escrowed.run("stack", "output", "setupJob").stdout.strip()
    digest_before = checksum(escrowed)
    escrowed.run("config", "set", "--path", "onboarding:couchdb.passwordRotation.app", "1")

    preview = escrowed.preview()
    refusals = [d["message"] for d in preview["diagnostics"] if d["severity"] == "error"]
    assert preview["returncode"] == 0, refusals
    ops = {name_of(s["urn"]): s["op"] for s in preview["steps"] if s["op"] != "same"}
    assert ops.pop(f"{STACK}-couchdb-app-password") == "replace"
    assert ops.pop(f"{STACK}-couchdb-app-secret") == "update"
    assert ops.pop(f"{STACK}-couchdb-setup") == "replace"
    assert ops.pop(f"{STACK}-webapp-deployment") == "update"
    # Nothing else, but the provider's own settings should they change with the fix.
    assert set(ops) <= {f"{STACK}-render"}, ops
    assert not [s["urn"] for s in preview["steps"] if s["op"] in REMOVING and s["urn"] in protected]

    escrowed.up()
    after = escrowed.secret("couchdb-app")
    assert after["password"] != before["password"]
    assert after["username"] == before["username"]
    assert escrowed.held_keys() == keys
    job_after = escrowed.run("stack", "output", "setupJob").stdout.strip()
    assert job_after != job_before
    jobs = {
        m["metadata"]["name"] for _, m in load_manifests(escrowed.rendered) if m["kind"] == "Job"
    }
    assert jobs == {job_after}
    assert checksum(escrowed) != digest_before
    assert escrowed.protected() == protected


def test_rotating_the_admin_password_rolls_the_couchdb_pods_and_replaces_nothing_protected(
    escrowed: Box,
) -> None:
    protected = escrowed.protected()
    password = escrowed.secret("couchdb-admin")["adminPassword"]
    admins = admins_entry(escrowed)
    keys = escrowed.held_keys()
    template = escrowed.manifest("StatefulSet", "couchdb")["spec"]["template"]["metadata"]
    escrowed.run("config", "set", "--path", "onboarding:couchdb.passwordRotation.admin", "1")

    preview = escrowed.preview()
    refusals = [d["message"] for d in preview["diagnostics"] if d["severity"] == "error"]
    assert preview["returncode"] == 0, refusals
    ops = {name_of(s["urn"]): s["op"] for s in preview["steps"] if s["op"] != "same"}
    assert ops.pop(f"{STACK}-couchdb-admin-password") == "replace"
    assert ops.pop(f"{STACK}-couchdb-admin-secret") == "update"
    assert ops.pop(f"{STACK}-couchdb-server-secret") == "update"
    assert ops.pop(f"{STACK}-couchdb-statefulset") == "update"
    assert set(ops) <= {f"{STACK}-render"}, ops
    assert not [s["urn"] for s in preview["steps"] if s["op"] in REMOVING and s["urn"] in protected]

    escrowed.up()
    rotated = escrowed.secret("couchdb-admin")["adminPassword"]
    assert rotated != password
    assert (
        escrowed.run("stack", "output", "couchdbAdminPassword", "--show-secrets").stdout.strip()
        == rotated
    )
    assert admins_entry(escrowed) != admins
    assert escrowed.held_keys() == keys
    rolled = escrowed.manifest("StatefulSet", "couchdb")["spec"]["template"]["metadata"]
    assert (
        rolled["annotations"]["checksum/server-keys"]
        != template["annotations"]["checksum/server-keys"]
    )
    assert rolled["annotations"]["checksum/config"] == template["annotations"]["checksum/config"]
    assert escrowed.protected() == protected


def admins_entry(box: Box) -> str:
    ini = configparser.ConfigParser(strict=True)
    ini.read_string(box.secret("couchdb-server")["20-secrets.ini"])
    return ini.get("admins", "admin")


def checksum(box: Box) -> str:
    deployment = box.manifest("Deployment", "webapp")
    annotation: str = deployment["spec"]["template"]["metadata"]["annotations"][
        "checksum/couchdb-credentials"
    ]
    return annotation


def test_a_change_of_couchdb_s_ini_updates_its_configmap_in_place_and_rolls_the_pods(
    escrowed: Box,
) -> None:
    """`couchdb-config` has a fixed name: replaced, it would be deleted first and drag the
    protected StatefulSet mounting it into a replacement the engine refuses, so no change of
    CouchDB's configuration (TLS included) could ever be deployed. Updated in place, the pods
    roll on the checksum."""
    protected = escrowed.protected()
    template = escrowed.manifest("StatefulSet", "couchdb")["spec"]["template"]["metadata"]
    escrowed.run("config", "set", "--path", "onboarding:couchdb.maxDocumentSizeBytes", "4194304")

    preview = escrowed.preview()
    refusals = [d["message"] for d in preview["diagnostics"] if d["severity"] == "error"]
    assert preview["returncode"] == 0, refusals
    ops = {name_of(s["urn"]): s["op"] for s in preview["steps"] if s["op"] != "same"}
    assert ops.pop(f"{STACK}-couchdb-config") == "update"
    assert ops.pop(f"{STACK}-couchdb-statefulset") == "update"
    assert ops.pop(f"{STACK}-couchdb-setup") == "replace"  # a new setup for a new spec
    assert set(ops) <= {f"{STACK}-render"}, ops
    assert not [s["urn"] for s in preview["steps"] if s["op"] in REMOVING and s["urn"] in protected]

    escrowed.up()
    ini = configparser.ConfigParser(strict=True, inline_comment_prefixes=None)
    ini.read_string(escrowed.manifest("ConfigMap", "couchdb-config")["data"]["10-cluster.ini"])
    assert ini.get("couchdb", "max_document_size") == "4194304"
    rolled = escrowed.manifest("StatefulSet", "couchdb")["spec"]["template"]["metadata"]
    assert rolled["annotations"]["checksum/config"] != template["annotations"]["checksum/config"]
    assert escrowed.protected() == protected
