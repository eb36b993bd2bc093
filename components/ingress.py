"""The public entry: HTTPS to the onboarding site only, never to CouchDB."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.core.v1 import ConfigMap
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    HTTPIngressPathArgs,
    HTTPIngressRuleValueArgs,
    IngressBackendArgs,
    IngressRuleArgs,
    IngressServiceBackendArgs,
    IngressSpecArgs,
    IngressTLSArgs,
    ServiceBackendPortArgs,
)
from pulumi_kubernetes.networking.v1 import Ingress as KubeIngress

from components.labels import standard_labels

NAME = "onboarding"

# Sent with every answer of the site. HSTS is a year with subdomains: the bank's domain
# is HTTPS-only.
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


@dataclass(frozen=True)
class IngressArgs:
    environment: str
    namespace: pulumi.Input[str]
    namespace_name: str
    host: str
    class_name: str
    cluster_issuer: str
    backend_service: pulumi.Input[str]
    backend_port: int
    rate_limit_rps: int
    max_body_size: str


class Ingress(pulumi.ComponentResource):
    """TLS from cert-manager, security headers, per-client rate limit and body-size cap.

    Annotations are those of ingress-nginx, the hosting provider's controller.
    """

    ingress: KubeIngress
    host: str
    url: str
    tls_secret_name: str

    def __init__(
        self, name: str, args: IngressArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:Ingress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = standard_labels(NAME, args.environment, "ingress")
        self.host = args.host
        self.url = f"https://{args.host}/"
        self.tls_secret_name = f"{NAME}-tls"

        headers = ConfigMap(
            f"{name}-headers",
            metadata=ObjectMetaArgs(
                name=f"{NAME}-security-headers", namespace=args.namespace, labels=labels
            ),
            data=SECURITY_HEADERS,
            opts=child,
        )

        annotations = pulumi.Output.from_input(headers.metadata.name).apply(
            lambda headers_name: {
                "cert-manager.io/cluster-issuer": args.cluster_issuer,
                "nginx.ingress.kubernetes.io/ssl-redirect": "true",
                "nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
                "nginx.ingress.kubernetes.io/custom-headers": (
                    f"{args.namespace_name}/{headers_name}"
                ),
                "nginx.ingress.kubernetes.io/limit-rps": str(args.rate_limit_rps),
                "nginx.ingress.kubernetes.io/limit-burst-multiplier": "5",
                "nginx.ingress.kubernetes.io/limit-connections": str(args.rate_limit_rps),
                "nginx.ingress.kubernetes.io/proxy-body-size": args.max_body_size,
                "nginx.ingress.kubernetes.io/enable-cors": "false",
            }
        )

        self.ingress = KubeIngress(
            f"{name}-ingress",
            metadata=ObjectMetaArgs(
                name=NAME, namespace=args.namespace, labels=labels, annotations=annotations
            ),
            spec=IngressSpecArgs(
                ingress_class_name=args.class_name,
                tls=[IngressTLSArgs(hosts=[args.host], secret_name=self.tls_secret_name)],
                rules=[
                    IngressRuleArgs(
                        host=args.host,
                        http=HTTPIngressRuleValueArgs(
                            paths=[
                                HTTPIngressPathArgs(
                                    path="/",
                                    path_type="Prefix",
                                    backend=IngressBackendArgs(
                                        service=IngressServiceBackendArgs(
                                            name=args.backend_service,
                                            port=ServiceBackendPortArgs(number=args.backend_port),
                                        )
                                    ),
                                )
                            ]
                        ),
                    )
                ],
            ),
            opts=child,
        )
        self.register_outputs({"url": self.url})
