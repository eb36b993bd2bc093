"""The public edge, on Gateway API: HTTPS to the site's public paths only, never to CouchDB
nor to the site's management port.

The hosting provider runs Envoy Gateway (a maintained Gateway API implementation; the
ingress-nginx project is retired). Each environment owns its Gateway, in its own namespace:
its own listeners, certificate and policies, so a change to preprod's edge cannot touch
prod's. Envoy Gateway runs each Gateway's proxies (a Deployment and a LoadBalancer Service)
in its own namespace, labelled with the Gateway's name and namespace (`proxy_pod_labels`):
the site's NetworkPolicy admits exactly those pods to the public port.

    Gateway              listener https (443, the cert-manager certificate) and http (80)
    HTTPRoute site       https: host + public path prefixes -> the site's Service, public port,
                         with the security headers (standard ResponseHeaderModifier filter);
                         the site's management paths answered 404 by the proxy itself
                         (HTTPRouteFilter directResponse), in case the image also serves them
                         on its public port: the longest prefix wins, so /metrics never
                         follows "/"
    HTTPRoute redirect   http: everything -> 301 to https (no backend)
    Certificate          cert-manager, from the ClusterIssuer, into the listener's Secret
    ClientTrafficPolicy  TLS 1.2 minimum, ECDHE AEAD ciphers only, connection buffer
    BackendTrafficPolicy per-client rate limit (each source address its own bucket) and the
                         request body limit (413 beyond it)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.labels import standard_labels

NAME = "onboarding"
GATEWAY_API = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
CERT_MANAGER_API = "cert-manager.io/v1"
HTTPS_LISTENER = "https"
HTTP_LISTENER = "http"

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

# TLS 1.2 at least; for 1.2, forward-secret AEAD suites only (ANSSI / Mozilla
# "intermediate"). TLS 1.3's suites are all sound and not configurable.
TLS_MIN_VERSION = "1.2"
TLS_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)

# Labels Envoy Gateway puts on the proxy pods of a Gateway.
OWNING_GATEWAY_NAME = "gateway.envoyproxy.io/owning-gateway-name"
OWNING_GATEWAY_NAMESPACE = "gateway.envoyproxy.io/owning-gateway-namespace"


def _covers(prefix: str, path: str) -> bool:
    """Whether a Gateway API PathPrefix match on `prefix` takes `path` (segment-wise)."""
    prefix = prefix.rstrip("/")
    return prefix in ("", path) or path.startswith(prefix + "/")


def proxy_pod_labels(namespace_name: str) -> dict[str, str]:
    """The labels of the Envoy pods serving this environment's Gateway."""
    return {OWNING_GATEWAY_NAME: NAME, OWNING_GATEWAY_NAMESPACE: namespace_name}


@dataclass(frozen=True)
class EdgeArgs:
    environment: str
    namespace: pulumi.Input[str]
    host: str
    gateway_class: str
    cluster_issuer: str
    public_paths: Sequence[str]
    # Paths the edge answers 404 itself (the site's metrics and health paths), wherever a
    # public path would cover them.
    blocked_paths: Sequence[str]
    backend_service: pulumi.Input[str]
    backend_port: int
    rate_limit_rps: int
    # A Kubernetes quantity ("2Mi").
    max_body_size: str


class Edge(pulumi.ComponentResource):
    """The Gateway, its two routes, its certificate and Envoy Gateway's policies."""

    gateway: CustomResource
    route: CustomResource
    host: str
    url: str
    tls_secret_name: str

    def __init__(
        self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = standard_labels(NAME, args.environment, "edge")
        self.host = args.host
        # The site's address (the stack output publicUrl, the blackbox probe's target): its
        # first public path.
        self.url = f"https://{args.host}{args.public_paths[0]}"
        self.tls_secret_name = f"{NAME}-tls"

        def metadata(resource_name: str) -> ObjectMetaArgs:
            return ObjectMetaArgs(name=resource_name, namespace=args.namespace, labels=labels)

        certificate = CustomResource(
            f"{name}-certificate",
            api_version=CERT_MANAGER_API,
            kind="Certificate",
            metadata=metadata(self.tls_secret_name),
            spec={
                "secretName": self.tls_secret_name,
                "dnsNames": [args.host],
                "issuerRef": {
                    "group": "cert-manager.io",
                    "kind": "ClusterIssuer",
                    "name": args.cluster_issuer,
                },
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            },
            opts=child,
        )

        # Routes of this namespace only may attach; each listener answers for the host only.
        same_namespace = {"namespaces": {"from": "Same"}, "kinds": [{"kind": "HTTPRoute"}]}
        self.gateway = CustomResource(
            f"{name}-gateway",
            api_version=GATEWAY_API,
            kind="Gateway",
            metadata=ObjectMetaArgs(
                name=NAME,
                namespace=args.namespace,
                labels=labels,
                # `pulumi up` waits until Envoy Gateway has programmed the Gateway (its proxies
                # up, an address given): a missing class or controller fails the deploy.
                annotations={"pulumi.com/waitFor": "condition=Programmed"},
            ),
            spec={
                "gatewayClassName": args.gateway_class,
                "listeners": [
                    {
                        "name": HTTPS_LISTENER,
                        "protocol": "HTTPS",
                        "port": 443,
                        "hostname": args.host,
                        "tls": {
                            "mode": "Terminate",
                            "certificateRefs": [
                                {"group": "", "kind": "Secret", "name": self.tls_secret_name}
                            ],
                        },
                        "allowedRoutes": same_namespace,
                    },
                    {
                        "name": HTTP_LISTENER,
                        "protocol": "HTTP",
                        "port": 80,
                        "hostname": args.host,
                        "allowedRoutes": same_namespace,
                    },
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[certificate]),
        )
        gateway_ref = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": NAME}

        security_headers = {
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {
                "set": [
                    {"name": header, "value": value} for header, value in SECURITY_HEADERS.items()
                ]
            },
        }
        rules: list[dict[str, Any]] = [
            {
                "matches": [
                    {"path": {"type": "PathPrefix", "value": path}} for path in args.public_paths
                ],
                "filters": [security_headers],
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": args.backend_service,
                        "port": args.backend_port,
                    }
                ],
            }
        ]
        blocked = [
            path
            for path in args.blocked_paths
            if any(_covers(public, path) for public in args.public_paths)
        ]
        route_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.gateway])
        if blocked:
            not_found = CustomResource(
                f"{name}-not-found",
                api_version=ENVOY_GATEWAY_API,
                kind="HTTPRouteFilter",
                metadata=metadata(f"{NAME}-not-found"),
                spec={
                    "directResponse": {
                        "statusCode": 404,
                        "contentType": "text/plain",
                        "body": {"type": "Inline", "inline": "Not Found\n"},
                    }
                },
                opts=child,
            )
            rules.append(
                {
                    "matches": [
                        {"path": {"type": "PathPrefix", "value": path}} for path in blocked
                    ],
                    "filters": [
                        security_headers,
                        {
                            "type": "ExtensionRef",
                            "extensionRef": {
                                "group": "gateway.envoyproxy.io",
                                "kind": "HTTPRouteFilter",
                                "name": f"{NAME}-not-found",
                            },
                        },
                    ],
                }
            )
            route_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.gateway, not_found])

        self.route = CustomResource(
            f"{name}-route",
            api_version=GATEWAY_API,
            kind="HTTPRoute",
            metadata=metadata(NAME),
            spec={
                "parentRefs": [{**gateway_ref, "sectionName": HTTPS_LISTENER}],
                "hostnames": [args.host],
                "rules": rules,
            },
            opts=route_opts,
        )

        CustomResource(
            f"{name}-https-redirect",
            api_version=GATEWAY_API,
            kind="HTTPRoute",
            metadata=metadata(f"{NAME}-https-redirect"),
            spec={
                "parentRefs": [{**gateway_ref, "sectionName": HTTP_LISTENER}],
                "hostnames": [args.host],
                "rules": [
                    {
                        "filters": [
                            {
                                "type": "RequestRedirect",
                                "requestRedirect": {"scheme": "https", "statusCode": 301},
                            }
                        ]
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway]),
        )

        gateway_target = [gateway_ref]
        policy_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.gateway])
        CustomResource(
            f"{name}-client-traffic",
            api_version=ENVOY_GATEWAY_API,
            kind="ClientTrafficPolicy",
            metadata=metadata(NAME),
            spec={
                "targetRefs": gateway_target,
                "tls": {
                    "minVersion": TLS_MIN_VERSION,
                    "ciphers": list(TLS_CIPHERS),
                    "alpnProtocols": ["h2", "http/1.1"],
                },
                # Envoy Gateway: a request buffer needs a connection buffer as large.
                "connection": {"bufferLimit": args.max_body_size},
                # Headers with underscores can pass for others upstream (X_User as X-User):
                # dropped, as ingress-nginx did.
                "headers": {"withUnderscoresAction": "DropHeader"},
            },
            opts=policy_opts,
        )
        CustomResource(
            f"{name}-backend-traffic",
            api_version=ENVOY_GATEWAY_API,
            kind="BackendTrafficPolicy",
            metadata=metadata(NAME),
            spec={
                "targetRefs": gateway_target,
                # A local limit: per client address (each its own bucket), per Envoy replica.
                "rateLimit": {
                    "type": "Local",
                    "local": {
                        "rules": [
                            {
                                "clientSelectors": [
                                    {"sourceCIDR": {"type": "Distinct", "value": "0.0.0.0/0"}}
                                ],
                                "limit": {"requests": args.rate_limit_rps, "unit": "Second"},
                            },
                            {
                                "clientSelectors": [
                                    {"sourceCIDR": {"type": "Distinct", "value": "::/0"}}
                                ],
                                "limit": {"requests": args.rate_limit_rps, "unit": "Second"},
                            },
                        ]
                    },
                },
                # Larger bodies are refused with 413 before reaching the site.
                "requestBuffer": {"limit": args.max_body_size},
            },
            opts=policy_opts,
        )

        self.register_outputs({"url": self.url})
