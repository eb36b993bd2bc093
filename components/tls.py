"""TLS inside the cluster: the environment's own CA and CouchDB's serving certificate, issued
and renewed by cert-manager.

    Issuer      <ns>/couchdb-selfsigned   self-signed: only signs the CA below
    Certificate <ns>/couchdb-ca           the environment's CA (Secret couchdb-ca)
    Issuer      <ns>/couchdb-ca           issues from that CA
    Certificate <ns>/couchdb-tls          CouchDB's certificate (Secret couchdb-tls:
                                          tls.crt, tls.key, ca.crt)

Everything is namespaced: each environment has its own CA, and no ClusterIssuer lets one
environment's workloads obtain a certificate the other trusts. One certificate names the
client Service and every pod's headless DNS name: it is served on HTTPS and presented to peers
on the Erlang distribution, both ways (server and client auth).

Renewal: cert-manager rewrites the Secret in place (a new private key each time), and the
kubelet swaps the files of a Secret mounted as a directory. Erlang's ssl reads certificate
files through its PEM cache, which it checks every 2 minutes, so CouchDB serves the new
certificate on new connections without a restart (measured: README of the TLS proof in the
report of issue 14). The CA keeps its key across its own renewals, so the clients' `ca.crt`
stays valid for the certificates issued before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import (
    KeyToPathArgs,
    SecretVolumeSourceArgs,
    VolumeArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

CERT_MANAGER_API = "cert-manager.io/v1"
CA_FILE_KEY = "ca.crt"
"""The key of the CA certificate in a cert-manager Secret: the only one clients mount."""
CLIENT_CA_DIR = "/var/run/secrets/couchdb-ca"
CLIENT_CA_FILE = f"{CLIENT_CA_DIR}/{CA_FILE_KEY}"
"""Where a client of CouchDB finds the CA (COUCHDB_CA_FILE)."""
CA_FILE_ENV = "COUCHDB_CA_FILE"


def ca_volume(secret_name: pulumi.Input[str]) -> VolumeArgs:
    """A client's volume of the CA certificate alone: the Secret's `ca.crt`, never its key."""
    return VolumeArgs(
        name="couchdb-ca",
        secret=SecretVolumeSourceArgs(
            secret_name=secret_name,
            default_mode=0o444,
            items=[KeyToPathArgs(key=CA_FILE_KEY, path=CA_FILE_KEY)],
        ),
    )


def ca_mount() -> VolumeMountArgs:
    """Mounted as a directory: the kubelet updates the file when the Secret changes."""
    return VolumeMountArgs(name="couchdb-ca", mount_path=CLIENT_CA_DIR, read_only=True)


def serving_dns_names(
    service: str, headless_service: str, namespace: str, statefulset: str, replicas: int
) -> list[str]:
    """Every name a client or a peer reaches CouchDB by: the client Service in its short and
    full forms, and each pod by its headless name (the host part of its Erlang node name)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        *(
            f"{statefulset}-{ordinal}.{headless_service}.{namespace}.svc.cluster.local"
            for ordinal in range(replicas)
        ),
    ]


@dataclass(frozen=True)
class CertificateLifetime:
    """cert-manager durations (Go syntax, hours). Short-lived serving certificates renewed a
    third of their life before expiry; a CA of five years renewed one year ahead."""

    serving_duration: str = "720h"
    serving_renew_before: str = "240h"
    ca_duration: str = "43800h"
    ca_renew_before: str = "8760h"


@dataclass(frozen=True)
class InternalTlsArgs:
    environment: str
    namespace: pulumi.Input[str]
    labels: dict[str, str]
    # What the certificate is for (its Secret's name), and the names it covers.
    name: str
    dns_names: Sequence[str]
    lifetime: CertificateLifetime = CertificateLifetime()


class InternalTls(pulumi.ComponentResource):
    """The environment's CA and one serving certificate from it, both from cert-manager."""

    secret_name: str
    """The Secret cert-manager writes: `tls.crt`, `tls.key`, `ca.crt`."""
    certificate: CustomResource

    def __init__(
        self, name: str, args: InternalTlsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:InternalTls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        life = args.lifetime
        ca_name = f"{args.name}-ca"

        def metadata(resource: str) -> ObjectMetaArgs:
            return ObjectMetaArgs(name=resource, namespace=args.namespace, labels=args.labels)

        bootstrap = CustomResource(
            f"{name}-selfsigned-issuer",
            api_version=CERT_MANAGER_API,
            kind="Issuer",
            metadata=metadata(f"{args.name}-selfsigned"),
            spec={"selfSigned": {}},
            opts=child,
        )
        ca_certificate = CustomResource(
            f"{name}-ca-certificate",
            api_version=CERT_MANAGER_API,
            kind="Certificate",
            metadata=metadata(ca_name),
            spec={
                "isCA": True,
                "commonName": f"onboarding {args.environment} {args.name} CA",
                "secretName": ca_name,
                "duration": life.ca_duration,
                "renewBefore": life.ca_renew_before,
                # The CA keeps its key when renewed: certificates issued before still chain
                # to the renewed CA certificate every client holds.
                "privateKey": {"algorithm": "ECDSA", "size": 384, "rotationPolicy": "Never"},
                "usages": ["cert sign", "crl sign", "digital signature"],
                "issuerRef": {
                    "group": "cert-manager.io",
                    "kind": "Issuer",
                    "name": f"{args.name}-selfsigned",
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[bootstrap]),
        )
        ca_issuer = CustomResource(
            f"{name}-ca-issuer",
            api_version=CERT_MANAGER_API,
            kind="Issuer",
            metadata=metadata(ca_name),
            spec={"ca": {"secretName": ca_name}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ca_certificate]),
        )
        self.secret_name = f"{args.name}-tls"
        self.certificate = CustomResource(
            f"{name}-certificate",
            api_version=CERT_MANAGER_API,
            kind="Certificate",
            metadata=metadata(self.secret_name),
            spec={
                "secretName": self.secret_name,
                "commonName": args.dns_names[0],
                "dnsNames": list(args.dns_names),
                "duration": life.serving_duration,
                "renewBefore": life.serving_renew_before,
                # A new key at every renewal.
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                # Served to clients (HTTPS, the distribution's listener) and presented to the
                # peers a node connects to (the distribution's client side).
                "usages": ["digital signature", "server auth", "client auth"],
                "issuerRef": _issuer(ca_name),
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ca_issuer]),
        )
        self.register_outputs({"secret_name": self.secret_name})


def _issuer(name: str) -> dict[str, str]:
    return {"group": "cert-manager.io", "kind": "Issuer", "name": name}
