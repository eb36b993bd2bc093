"""What the Internet can reach, computed from manifests (the program's recorded inputs, or
the files the real CLI renders).

Every way in that Kubernetes offers is followed to the container port it ends on:

- each Gateway listener, through the HTTPRoutes (and any other *Route) attached to it: the
  route's namespace must be allowed by the listener, its hostnames must intersect the
  listener's; each rule's matches (PathPrefix "/" when none), unless the rule only redirects,
  to its backend Services and request mirrors (a rule without either, answered by the proxy
  itself, reaches nothing);
- each Ingress rule and default backend, to its Services;
- each Service of type LoadBalancer or NodePort, or with externalIPs: all of its ports;
- each container hostPort, and every port of a pod on the host's network;

and a Service port to the pods its selector matches, on the containerPort its targetPort
names (or numbers). The result is a set of `Reach`: how the outside gets in, for which host
and path, and on which workload's container port it lands.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


@dataclass(frozen=True, order=True)
class Reach:
    entry: str  # "Gateway ns/name listener", "Service ns/name NodePort 30080", ...
    host: str | None  # None: any host (a raw TCP entry)
    path: str | None  # "PathPrefix /", "Exact /x"; None: every path
    workload: str  # "namespace/name" of the pod template
    container_port: int
    port_name: str | None


@dataclass(frozen=True)
class _Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    ports: tuple[tuple[int, str | None, int | None], ...]  # (containerPort, name, hostPort)
    host_network: bool


def _meta(m: Manifest) -> dict[str, Any]:
    return dict(m.get("metadata") or {})


def _namespace(m: Manifest, default: str = "default") -> str:
    return str(_meta(m).get("namespace") or default)


def _pods(manifests: Iterable[Manifest]) -> list[_Pod]:
    pods = []
    for m in manifests:
        kind = m.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        spec = m.get("spec") or {}
        if kind == "Pod":
            template: dict[str, Any] = {"metadata": _meta(m), "spec": spec}
        elif kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
        else:
            template = spec["template"]
        pod_spec = template.get("spec") or {}
        ports = tuple(
            (int(p["containerPort"]), p.get("name"), p.get("hostPort"))
            for c in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]
            for p in c.get("ports") or []
        )
        pods.append(
            _Pod(
                _namespace(m),
                str(_meta(m)["name"]),
                dict((template.get("metadata") or {}).get("labels") or {}),
                ports,
                bool(pod_spec.get("hostNetwork")),
            )
        )
    return pods


def _selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    # A Service without a selector has hand-made Endpoints: the program makes none.
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


class Edge:
    def __init__(self, manifests: Iterable[Manifest]) -> None:
        self.manifests = [m for m in manifests if isinstance(m, dict) and m.get("kind")]
        self.pods = _pods(self.manifests)
        self.services = {
            (_namespace(m), _meta(m)["name"]): m for m in self.manifests if m["kind"] == "Service"
        }

    # --- Service -> pods ------------------------------------------------------------------

    def _service_port_targets(
        self, service: Manifest, service_port: dict[str, Any]
    ) -> Iterator[tuple[_Pod, int, str | None]]:
        namespace = _namespace(service)
        selector = (service.get("spec") or {}).get("selector")
        target = service_port.get("targetPort", service_port["port"])
        for pod in self.pods:
            if pod.namespace != namespace or not _selects(selector, pod.labels):
                continue
            for number, name, _ in pod.ports:
                if (isinstance(target, str) and target == name) or (
                    not isinstance(target, str) and int(target) == number
                ):
                    yield pod, number, name

    def _backend(
        self, namespace: str, name: str, port: int | str | None
    ) -> Iterator[tuple[_Pod, int, str | None]]:
        """A Service backend's port (by number or, for an Ingress, by name) to container ports;
        a backend without a port means all of them."""
        service = self.services.get((namespace, name))
        if service is None:
            return
        for service_port in (service.get("spec") or {}).get("ports") or []:
            if (
                port is None
                or port == service_port.get("port")
                or (isinstance(port, str) and port == service_port.get("name"))
            ):
                yield from self._service_port_targets(service, service_port)

    # --- the ways in ----------------------------------------------------------------------

    def reaches(self) -> set[Reach]:
        found: set[Reach] = set()
        found |= self._gateways()
        found |= self._ingresses()
        found |= self._exposed_services()
        found |= self._host_ports()
        return found

    def _gateways(self) -> set[Reach]:
        found: set[Reach] = set()
        gateways = {
            (_namespace(m), _meta(m)["name"]): m for m in self.manifests if m["kind"] == "Gateway"
        }
        routes = [m for m in self.manifests if str(m["kind"]).endswith("Route")]
        for route in routes:
            route_ns = _namespace(route)
            spec = route.get("spec") or {}
            for parent in spec.get("parentRefs") or []:
                if parent.get("kind", "Gateway") != "Gateway":
                    continue
                key = (parent.get("namespace") or route_ns, parent["name"])
                gateway = gateways.get(key)
                if gateway is None:
                    continue
                for listener in (gateway.get("spec") or {}).get("listeners") or []:
                    if parent.get("sectionName") not in (None, listener["name"]):
                        continue
                    if parent.get("port") not in (None, listener["port"]):
                        continue
                    if not self._allows(listener, key[0], route):
                        continue
                    hosts = _hosts(listener.get("hostname"), spec.get("hostnames") or [])
                    entry = f"Gateway {key[0]}/{key[1]} {listener['name']}"
                    for host in hosts:
                        found |= self._route_rules(entry, host, route_ns, route["kind"], spec)
        return found

    def _allows(self, listener: dict[str, Any], gateway_ns: str, route: Manifest) -> bool:
        allowed = listener.get("allowedRoutes") or {}
        kinds = [k["kind"] for k in allowed.get("kinds") or []]
        if kinds and route["kind"] not in kinds:
            return False
        origin = (allowed.get("namespaces") or {}).get("from", "Same")
        if origin == "Same":
            return _namespace(route) == gateway_ns
        # All, or a Selector this evaluator does not narrow: count the route as attached.
        return True

    def _route_rules(
        self, entry: str, host: str, namespace: str, kind: str, spec: Manifest
    ) -> set[Reach]:
        found: set[Reach] = set()
        for rule in spec.get("rules") or []:
            filters = rule.get("filters") or []
            if any(f.get("type") == "RequestRedirect" for f in filters):
                continue  # answered by the proxy itself
            paths: list[str | None] = [
                f"{m['path'].get('type', 'PathPrefix')} {m['path'].get('value', '/')}"
                if m.get("path")
                else "PathPrefix /"
                for m in rule.get("matches") or [{}]
            ]
            if kind != "HTTPRoute":
                paths = [None]  # GRPCRoute, TLSRoute, TCPRoute...: every request or stream
            # a mirrored request reaches its backend too (its answer is dropped)
            mirrors = [
                f["requestMirror"]["backendRef"]
                for f in filters
                if f.get("type") == "RequestMirror" and f.get("requestMirror")
            ]
            for backend in [*(rule.get("backendRefs") or []), *mirrors]:
                if backend.get("kind", "Service") != "Service" or backend.get("group", "") != "":
                    continue
                targets = self._backend(
                    backend.get("namespace") or namespace, backend["name"], backend.get("port")
                )
                for pod, number, name in targets:
                    for path in paths:
                        found.add(
                            Reach(entry, host, path, f"{pod.namespace}/{pod.name}", number, name)
                        )
        return found

    def _ingresses(self) -> set[Reach]:
        found: set[Reach] = set()
        for ingress in (m for m in self.manifests if m["kind"] == "Ingress"):
            namespace = _namespace(ingress)
            entry = f"Ingress {namespace}/{_meta(ingress)['name']}"
            spec = ingress.get("spec") or {}
            backends: list[tuple[str | None, str, dict[str, Any]]] = []
            if spec.get("defaultBackend"):
                backends.append((None, "Prefix /", spec["defaultBackend"]))
            for rule in spec.get("rules") or []:
                for path in (rule.get("http") or {}).get("paths") or []:
                    where = f"{path.get('pathType', 'Prefix')} {path.get('path', '/')}"
                    backends.append((rule.get("host"), where, path["backend"]))
            for host, where, backend in backends:
                service = backend.get("service")
                if not service:
                    continue
                port = service.get("port") or {}
                for pod, number, name in self._backend(
                    namespace, service["name"], port.get("number") or port.get("name")
                ):
                    found.add(
                        Reach(entry, host, where, f"{pod.namespace}/{pod.name}", number, name)
                    )
        return found

    def _exposed_services(self) -> set[Reach]:
        found: set[Reach] = set()
        for (namespace, name), service in self.services.items():
            spec = service.get("spec") or {}
            kind = spec.get("type", "ClusterIP")
            if kind not in ("LoadBalancer", "NodePort") and not spec.get("externalIPs"):
                continue
            for service_port in spec.get("ports") or []:
                entry = f"Service {namespace}/{name} {kind} {service_port['port']}"
                for pod, number, port_name in self._service_port_targets(service, service_port):
                    found.add(
                        Reach(entry, None, None, f"{pod.namespace}/{pod.name}", number, port_name)
                    )
        return found

    def _host_ports(self) -> set[Reach]:
        found: set[Reach] = set()
        for pod in self.pods:
            for number, name, host_port in pod.ports:
                if host_port or pod.host_network:
                    entry = f"host network {pod.namespace}/{pod.name}" + (
                        f" hostPort {host_port}" if host_port else ""
                    )
                    found.add(Reach(entry, None, None, f"{pod.namespace}/{pod.name}", number, name))
        return found


def _hosts(listener_host: str | None, route_hosts: list[str]) -> list[str]:
    """The host names a route answers for on a listener (Gateway API's intersection)."""
    if not route_hosts:
        return [listener_host or "*"]
    if not listener_host:
        return list(route_hosts)
    hosts = []
    for host in route_hosts:
        if _host_match(listener_host, host):
            hosts.append(host)  # the route's is the narrower (or the same)
        elif _host_match(host, listener_host):
            hosts.append(listener_host)
    return hosts


def _host_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host


def path_covers(match: str | None, path: str) -> bool:
    """Whether a route match ("PathPrefix /x", "Exact /x", "Prefix /x", None) sends `path`."""
    if match is None:
        return True
    kind, _, value = match.partition(" ")
    if kind == "Exact":
        return path == value
    if kind in ("PathPrefix", "Prefix", "ImplementationSpecific"):
        prefix = value.rstrip("/")
        return prefix in ("", path) or path.startswith(prefix + "/")
    return True  # RegularExpression and the like: assume the worst


def reachable(manifests: Iterable[Manifest]) -> set[Reach]:
    return Edge(manifests).reaches()
