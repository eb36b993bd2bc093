"""CouchDB on a read-only root filesystem: the few places it writes, as bounded volumes.

The official image's entrypoint (docker-entrypoint.sh, 3.5.x) writes at every start:
- `touch /opt/couchdb/etc/local.d/docker.ini`, the file CouchDB then writes its runtime
  config changes to (the last ini file of the chain: `finish_cluster` copies the admin hash,
  uuid and auth secret there);
- `-name couchdb@$NODENAME` appended to `/opt/couchdb/etc/vm.args`;
- with COUCHDB_ERLANG_COOKIE set, the cookie into `/opt/couchdb/.erlang.cookie`.

So `/opt/couchdb/etc` becomes an emptyDir that an init container fills with the image's own
`etc` (the same image: no file of ours replaces one of CouchDB's), and the entrypoint runs
unchanged on that copy; our ini files are mounted on top of it, read-only. The cookie is not
handed to the entrypoint as an environment variable (where `kubectl describe`, crash reports
and child processes would see it): the init container copies it from the Secret's file into
a memory-backed emptyDir, owner-only as Erlang demands, mounted where Erlang reads it
(`$HOME/.erlang.cookie`). Everything else stays read-only: the release, the image's scripts.

Checked by hand on a real CouchDB 3.5.2 release with the official 3.5.x entrypoint, these
volumes and this init script (scripts/check-couchdb-readonly.sh): the node starts, names
itself, finishes the cluster, writes its config changes and data, and pings with the cookie;
without the etc volume the entrypoint stops at its `touch` (read-only file system).
"""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.core.v1 import (
    ContainerArgs,
    EnvVarArgs,
    KeyToPathArgs,
    SecretVolumeSourceArgs,
    VolumeArgs,
    VolumeMountArgs,
)

from components.workload import ContainerResources, restricted_container, scratch_volume

COUCHDB_HOME = "/opt/couchdb"
ETC_DIR = f"{COUCHDB_HOME}/etc"
COOKIE_PATH = f"{COUCHDB_HOME}/.erlang.cookie"
COOKIE_KEY = "erlangCookie"
# Where the init container sees the volumes it fills.
_ETC_COPY = "/runtime/etc"
_COOKIE_COPY = "/runtime/cookie"
_COOKIE_SECRET = "/var/run/secrets/couchdb-server"  # noqa: S105 (a mount path)
_COOKIE_FILE = "erlang.cookie"
# The image's etc is about 100 KiB; vm.args and docker.ini grow by a few lines.
ETC_SIZE_LIMIT = "16Mi"
TMP_SIZE_LIMIT = "64Mi"


def init_script() -> str:
    """What the init container runs (`sh -c`): idempotent, as a restarted pod sandbox runs
    it again over the same volumes."""
    return f"""\
set -eu
cp -R {ETC_DIR}/. {_ETC_COPY}/
cookie={_COOKIE_COPY}/{_COOKIE_FILE}
rm -f "$cookie"
(umask 077 && cat {_COOKIE_SECRET}/{COOKIE_KEY} > "$cookie")
chmod 0400 "$cookie"
"""


def runtime_volumes(server_secret_name: pulumi.Input[str]) -> list[VolumeArgs]:
    return [
        scratch_volume("etc", ETC_SIZE_LIMIT),
        # In memory, as a Secret volume is: the cookie never reaches the node's disk.
        scratch_volume("erlang-cookie", "1Mi", memory=True),
        scratch_volume("tmp", TMP_SIZE_LIMIT),
        VolumeArgs(
            name="cookie-secret",
            secret=SecretVolumeSourceArgs(
                secret_name=server_secret_name,
                default_mode=0o440,
                items=[KeyToPathArgs(key=COOKIE_KEY, path=COOKIE_KEY)],
            ),
        ),
    ]


def runtime_mounts() -> list[VolumeMountArgs]:
    """The CouchDB container's writable places (mount the ini files after these)."""
    return [
        VolumeMountArgs(name="etc", mount_path=ETC_DIR),
        VolumeMountArgs(name="erlang-cookie", mount_path=COOKIE_PATH, sub_path=_COOKIE_FILE),
        VolumeMountArgs(name="tmp", mount_path="/tmp"),
    ]


def runtime_env() -> list[EnvVarArgs]:
    return [
        # Where Erlang looks for the cookie; the non-root entrypoint does not set it.
        EnvVarArgs(name="HOME", value=COUCHDB_HOME),
        # No crash dump: it would hold documents from memory (personal data) on the node's
        # disk, and the root filesystem it defaults to is read-only anyway.
        EnvVarArgs(name="ERL_CRASH_DUMP_BYTES", value="0"),
    ]


def init_container(image: str, resources: ContainerResources) -> ContainerArgs:
    """Copies the image's etc and the cookie into the runtime volumes, as the couchdb user
    (the pod's), with the same limits as CouchDB itself (so it adds nothing to the pod's)."""
    return ContainerArgs(
        name="couchdb-runtime",
        image=image,
        command=["/bin/sh", "-c", init_script()],
        resources=resources.to_args(),
        security_context=restricted_container(),
        volume_mounts=[
            VolumeMountArgs(name="etc", mount_path=_ETC_COPY),
            VolumeMountArgs(name="erlang-cookie", mount_path=_COOKIE_COPY),
            VolumeMountArgs(name="cookie-secret", mount_path=_COOKIE_SECRET, read_only=True),
        ],
    )
