"""An in-memory stand-in for the Kubernetes API server (none can run here) that
implements the same Protocol as harness.kube.client.KubeClient
(harness.kube.api.KubeApi), returning the same typed views, parsed from objects
shaped as the API server sends them. Everything else is real: exec runs the command
on this machine, where every pod's address is a loopback address served by real
sockets answering as agnhost porter does, with the real curl and nc.

Services get a loopback cluster IP where a userspace proxy (kube-proxy's first
mode) forwards each TCP connection and UDP datagram to the next ready backend in
turn; their EndpointSlices are computed as the EndpointSlice controller computes
them (pods of the namespace matching the selector, the target port found by
FindPort: a number as it is, a name among the containers' ports of that protocol),
in the discovery.k8s.io/v1 shape, and only after ``endpoints_after`` reads.

Custom objects (the cluster-scoped admin policies, Calico's kinds) are stored as
applied, in the resources ``crds`` (CustomResourceDefinitions installed) or
``served`` (API discovery of an aggregated API server) make known; a call on a
resource the cluster does not serve fails with 404 as the API server answers, and
one whose namespace does not exist with 404 too. What a CNI makes of them is not
decided here (tests/kube/calico_double.py).

Calls named in ``broken_calls`` (``"delete namespace nph-r1-shop"``) go instead to
``broken``, a real KubeClient whose API server fails them, so they raise exactly
the error the client raises."""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from harness.kube.api import ExecRequest, ExecResult, KubeApi
from harness.kube.errors import KubeApiError
from harness.kube.execs import run_concurrently
from harness.kube.resources import FELIX_CONFIGURATION, ApiResource
from harness.kube.views import (
    EndpointSliceView,
    FelixConfigurationView,
    InstallationView,
    NamespaceView,
    NodeView,
    ObjectMeta,
    PodView,
    ServiceView,
    TigeraStatusView,
    endpoint_slice_view,
    felix_configuration_view,
    namespace_view,
    node_view,
    object_meta_view,
    pod_view,
    service_view,
)

ObjectKey = tuple[str, str, str | None, str]  # group, plural, namespace, name

NAME_LABEL = "kubernetes.io/metadata.name"
#: The SCTP client of the probe image is agnhost, which this machine lacks; the
#: environment check's connect attempt runs `false` instead and its verdict comes
#: from this machine's real /proc/net/protocols.
FALSE = shutil.which("false") or "/bin/false"


class PodServers:
    """Real TCP (HTTP) and UDP servers at a pod's loopback address, answering with ``identity``."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()

    def serve(self, address: str, ports: list[tuple[int, str]], identity: str) -> None:
        for port, protocol in ports:
            if protocol == "TCP":
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(16)
                sock.settimeout(0.2)
                threading.Thread(target=self._http, args=(sock, identity), daemon=True).start()
            elif protocol == "UDP":
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((address, port))
                sock.settimeout(0.2)
                threading.Thread(target=self._udp, args=(sock, identity), daemon=True).start()
            else:
                continue
            self.sockets.append(sock)

    def _http(self, sock: socket.socket, identity: str) -> None:
        body = identity.encode()
        while not self.stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(2)
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                except OSError:
                    pass

    def _udp(self, sock: socket.socket, identity: str) -> None:
        while not self.stop.is_set():
            try:
                _, peer = sock.recvfrom(1024)
            except OSError:
                continue
            sock.sendto(identity.encode(), peer)

    def close(self) -> None:
        self.stop.set()
        for sock in self.sockets:
            sock.close()


class BlackHole:
    """A listening TCP socket that completes no more connections (its accept queue
    is full, so the kernel drops each new SYN): a client connecting times out."""

    def __init__(self, address: str, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, port))
        self.listener.listen(0)
        self.filler = [socket.create_connection((address, port), timeout=2)]
        extra = socket.socket()
        extra.setblocking(False)
        try:
            extra.connect((address, port))
        except BlockingIOError:
            pass
        self.filler.append(extra)

    def close(self) -> None:
        for sock in (*self.filler, self.listener):
            sock.close()


class ServiceProxy:
    """A userspace proxy at a cluster IP and port: each TCP connection or UDP
    datagram goes to the next backend (address, port) in turn."""

    def __init__(self, address: str, port: int, protocol: str, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.turn = 0
        self.stop = threading.Event()
        kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        if protocol == "TCP":
            self.sock.listen(16)
            threading.Thread(target=self._tcp, daemon=True).start()
        else:
            threading.Thread(target=self._udp, daemon=True).start()

    def _next(self) -> tuple[str, int] | None:
        if not self.backends:
            return None
        backend = self.backends[self.turn % len(self.backends)]
        self.turn += 1
        return backend

    def _tcp(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            backend = self._next()
            with conn:
                if backend is None:
                    continue  # kube-proxy rejects: the client sees the connection closed
                try:
                    conn.settimeout(2)
                    with socket.create_connection(backend, timeout=2) as upstream:
                        upstream.sendall(conn.recv(1024))
                        while data := upstream.recv(4096):
                            conn.sendall(data)
                except OSError:
                    pass

    def _udp(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(1024)
            except OSError:
                continue
            backend = self._next()
            if backend is None:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
                upstream.settimeout(1)
                try:
                    upstream.sendto(data, backend)
                    reply, _ = upstream.recvfrom(1024)
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def find_port(pod: Mapping[str, Any], port: Mapping[str, Any]) -> int | None:
    """FindPort (kubernetes pkg/api/v1/pod/util.go): the number, or the container port of that name and protocol."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    for container in pod["spec"]["containers"]:
        for entry in container.get("ports", []):
            if entry.get("name") == target and entry.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(entry["containerPort"])
    return None


def _subnets() -> Iterator[str]:
    """Loopback /24s, one per double: 127.<worker>.<n>, a second octet of its own for
    each pytest-xdist worker (gw0, gw1...) so that doubles in parallel never share
    addresses, and the /24s of a worker reused in turn (a double's sockets are closed
    by then)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    second = 10 + int(worker) if worker.isdigit() else 9
    return itertools.cycle(f"127.{second}.{n}" for n in range(10, 250))


_blocks = _subnets()


class InMemoryCluster:
    kubeconfig = "/tmp/kubeconfig-of-the-double"
    context = "double"
    server = "https://double.invalid:6443"

    def __init__(self, ready_after: int = 1, nodes: tuple[str, ...] = ("worker", "worker2")) -> None:
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_namespaces: list[str] = []
        self.terminating: dict[str, int] = {}
        self.calls: list[str] = []
        self.ready_after = ready_after
        self.node_names = nodes
        self.subnet = next(_blocks)  # each double serves its pods from its own loopback /24
        self.next_host = 10
        self.pod_waiting_reason: str | None = None
        self.servers = PodServers()
        self.identity_override: dict[str, str] = {}
        self.node_labels: dict[str, str] = {}
        self.protocols_file: str | None = None  # where the environment check reads the kernel's protocols
        self.broken: Any = None
        self.broken_calls: set[str] = set()
        self.closed = False
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.proxies: dict[tuple[str, str], dict[tuple[int, str], ServiceProxy]] = {}
        self.next_cluster_ip = 200
        #: Reads of a Service's EndpointSlices before they list its endpoints.
        self.endpoints_after = 1
        self._slice_reads: dict[tuple[str, str], int] = {}
        #: CustomResourceDefinitions installed, by name (``clusternetworkpolicies.policy.networking.k8s.io``).
        self.crds: set[str] = set()
        #: Group versions an aggregated API server serves, with their resources.
        self.served: dict[tuple[str, str], set[str]] = {}
        #: Custom objects as stored (the manifest applied).
        self.objects: dict[ObjectKey, dict[str, Any]] = {}

    def _fails(self, call: str) -> bool:
        return call in self.broken_calls and self.broken is not None

    # -- cluster
    def server_version(self, timeout: float = 30.0) -> str:
        return "v1.36.4"

    def tigera_statuses(self) -> list[TigeraStatusView]:
        return []

    def installation(self, name: str = "default") -> InstallationView | None:
        return None

    def crd_exists(self, name: str) -> bool:
        self.calls.append(f"read CustomResourceDefinition {name}")
        return name in self.crds

    def daemonset_images(self, names: tuple[str, ...], namespaces: tuple[str, ...]) -> dict[str, str]:
        return {}

    # -- namespaces
    def read_namespace(self, name: str) -> NamespaceView | None:
        if name in self.terminating:
            self.terminating[name] -= 1
            if self.terminating[name] < 0:
                del self.terminating[name]
                self.namespaces.pop(name, None)
                return None
        ns = self.namespaces.get(name)
        return namespace_view(copy.deepcopy(ns)) if ns else None

    def create_namespace(self, manifest: Mapping[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        assert name not in self.namespaces, f"namespace {name} exists"
        ns = copy.deepcopy(dict(manifest))
        ns["metadata"]["labels"] = {**ns["metadata"].get("labels", {}), NAME_LABEL: name}
        self.namespaces[name] = ns
        self.calls.append(f"create namespace {name}")

    def list_namespaces(self) -> list[NamespaceView]:
        return [namespace_view(copy.deepcopy(ns)) for name, ns in sorted(self.namespaces.items()) if name not in self.terminating]

    def delete_namespace(self, name: str) -> None:
        if self._fails(f"delete namespace {name}"):
            self.broken.delete_namespace(name)
        self.calls.append(f"delete namespace {name}")
        self.deleted_namespaces.append(name)
        if name in self.namespaces:
            self.terminating[name] = 1  # gone after one more read
        for key in [k for k in self.pods if k[0] == name]:
            del self.pods[key]
        for key in [k for k in self.policies if k[0] == name]:
            del self.policies[key]
        for object_key in [k for k in self.objects if k[2] == name]:
            del self.objects[object_key]

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        if self._fails(f"relabel namespace {name}"):
            self.broken.set_namespace_labels(name, labels)
        # Like the API server: the name label is always there.
        self.namespaces[name]["metadata"]["labels"] = {**labels, NAME_LABEL: name}

    # -- nodes and pods
    def nodes(self) -> list[NodeView]:
        raw: list[dict[str, Any]] = [
            {
                "metadata": {"name": "control-plane", "labels": dict(self.node_labels)},
                "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        ]
        for name in self.node_names:
            raw.append(
                {
                    "metadata": {"name": name, "labels": dict(self.node_labels)},
                    "spec": {},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
            )
        return [node_view(node) for node in raw]

    def create_pod(self, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        assert meta["namespace"] in self.namespaces, f"no namespace {meta['namespace']}"
        assert key not in self.pods, f"pod {key} exists"
        pod = copy.deepcopy(dict(manifest))
        address = f"{self.subnet}.{self.next_host}"
        self.next_host += 1
        pod["status"] = {"phase": "Pending", "podIP": address}
        pod["polls"] = 0
        self.pods[key] = pod
        container = pod["spec"]["containers"][0]
        ports = [(p["containerPort"], p["protocol"]) for p in container.get("ports", [])]
        served = {e["name"] for e in container.get("env", [])}
        ports = [(port, proto) for port, proto in ports if f"SERVE_{proto}_PORT_{port}" in served]
        identity = container["env"][0]["value"] if container.get("env") else ""
        self.servers.serve(address, ports, self.identity_override.get(identity, identity))
        self.calls.append(f"create pod {key[0]}/{key[1]}")

    def list_pods(self, namespace: str) -> list[PodView]:
        out = []
        for (ns, _), pod in self.pods.items():
            if ns != namespace:
                continue
            status = pod["status"]
            pod["polls"] += 1
            if self.pod_waiting_reason:
                status["containerStatuses"] = [
                    {
                        "name": "agnhost",
                        "state": {"waiting": {"reason": self.pod_waiting_reason, "message": "rpc error: not found"}},
                    }
                ]
            elif pod["polls"] >= self.ready_after:
                status["phase"] = "Running"
                status["conditions"] = [{"type": "Ready", "status": "True"}]
            out.append(pod_view({k: copy.deepcopy(v) for k, v in pod.items() if k != "polls"}))
        return out

    def delete_pod(self, namespace: str, name: str) -> None:
        if self._fails(f"delete pod {namespace}/{name}"):
            self.broken.delete_pod(namespace, name)
        self.calls.append(f"delete pod {namespace}/{name}")
        self.pods.pop((namespace, name), None)

    def set_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        self.pods[(namespace, name)]["metadata"]["labels"] = dict(labels)

    def exec(self, request: ExecRequest) -> ExecResult:
        assert (request.namespace, request.pod) in self.pods and request.container == "agnhost"
        self.calls.append(f"exec {request.namespace}/{request.pod}")
        env = {**os.environ, "NPH_AGNHOST": FALSE}
        if self.protocols_file:
            env["NPH_PROTOCOLS"] = self.protocols_file
        try:
            result = subprocess.run(list(request.command), capture_output=True, text=True, timeout=request.timeout, env=env)
        except subprocess.TimeoutExpired:
            return ExecResult(None, "", "", f"no exit after {request.timeout:.0f}s")
        return ExecResult(result.returncode, result.stdout, result.stderr)

    def exec_many(self, requests: Sequence[ExecRequest], workers: int) -> list[ExecResult]:
        return run_concurrently(self.exec, requests, workers, lambda: None)

    # -- policies
    def apply_policy(self, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        assert meta["namespace"] in self.namespaces, f"no namespace {meta['namespace']}"
        self.policies[(meta["namespace"], meta["name"])] = copy.deepcopy(dict(manifest))

    def delete_policy(self, namespace: str, name: str) -> bool:
        if self._fails(f"delete NetworkPolicy {namespace}/{name}"):
            self.broken.delete_policy(namespace, name)
        return self.policies.pop((namespace, name), None) is not None

    def delete_all_policies(self, namespace: str) -> None:
        for key in [k for k in self.policies if k[0] == namespace]:
            del self.policies[key]

    # -- Services
    def create_service(self, manifest: Mapping[str, Any]) -> ServiceView:
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        assert meta["namespace"] in self.namespaces, f"no namespace {meta['namespace']}"
        assert key not in self.services, f"Service {key} exists"
        service = copy.deepcopy(dict(manifest))
        service["spec"]["clusterIP"] = f"{self.subnet}.{self.next_cluster_ip}"
        self.next_cluster_ip += 1
        self.services[key] = service
        self.calls.append(f"create service {key[0]}/{key[1]}")
        return service_view(copy.deepcopy(service))

    def read_service(self, namespace: str, name: str) -> ServiceView | None:
        found = self.services.get((namespace, name))
        return service_view(copy.deepcopy(found)) if found else None

    def delete_service(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete service {namespace}/{name}")
        self.services.pop((namespace, name), None)
        for proxy in self.proxies.pop((namespace, name), {}).values():
            proxy.close()

    def _endpoints(self, key: tuple[str, str]) -> list[tuple[Mapping[str, Any], list[tuple[str, int]]]]:
        """Per Service port: its ready endpoints (pod address, port)."""
        service = self.services[key]
        selector = service["spec"]["selector"]
        out = []
        for port in service["spec"]["ports"]:
            endpoints = []
            for (ns, _), pod in sorted(self.pods.items()):
                labels = pod["metadata"].get("labels", {})
                if ns != key[0] or any(labels.get(k) != v for k, v in selector.items()):
                    continue
                number = find_port(pod, port)
                if number is not None and pod["status"].get("phase") == "Running":
                    endpoints.append((pod["status"]["podIP"], number))
            out.append((port, endpoints))
        return out

    def list_endpoint_slices(self, namespace: str, service: str) -> list[EndpointSliceView]:
        key = (namespace, service)
        self._slice_reads[key] = self._slice_reads.get(key, 0) + 1
        if key not in self.services or self._slice_reads[key] < self.endpoints_after:
            return []
        slices: list[dict[str, Any]] = []
        proxies = self.proxies.setdefault(key, {})
        for port, endpoints in self._endpoints(key):
            protocol = port.get("protocol", "TCP")
            proxy = proxies.get((port["port"], protocol))
            if proxy is None:
                ip = self.services[key]["spec"]["clusterIP"]
                proxy = proxies[(port["port"], protocol)] = ServiceProxy(ip, port["port"], protocol, endpoints)
            proxy.backends = endpoints  # what kube-proxy does when the EndpointSlices change
            for address, number in endpoints:
                slices.append(
                    {
                        "metadata": {"name": f"{service}-{len(slices)}", "namespace": namespace},
                        "addressType": "IPv4",
                        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                        "ports": [{"name": port.get("name", ""), "port": number, "protocol": protocol}],
                    }
                )
        return [endpoint_slice_view(piece) for piece in slices]

    # -- custom objects
    def served_resources(self, group: str, version: str) -> frozenset[str] | None:
        self.calls.append(f"discover {group}/{version}")
        plurals = {name.split(".", 1)[0] for name in self.crds if name.split(".", 1)[1] == group}
        plurals |= self.served.get((group, version), set())
        return frozenset(plurals) if plurals else None

    def serves(self, resource: ApiResource) -> bool:
        return resource.crd in self.crds or resource.plural in self.served.get((resource.group, resource.version), set())

    def _object_key(self, what: str, resource: ApiResource, namespace: str | None, name: str) -> ObjectKey:
        if not self.serves(resource):
            raise KubeApiError(
                what,
                f"the API server at {self.server} answered 404: the server could not find the requested resource",
                status=404,
                reason="Not Found",
            )
        if resource.namespaced:
            assert namespace, f"{resource.kind} is namespaced"
            if namespace not in self.namespaces:
                raise KubeApiError(
                    what, f'the API server at {self.server} answered 404: namespaces "{namespace}" not found', status=404
                )
        else:
            assert namespace is None, f"{resource.kind} is cluster-scoped"
        return (resource.group, resource.plural, namespace, name)

    def _manifest_key(self, what: str, resource: ApiResource, manifest: Mapping[str, Any]) -> ObjectKey:
        meta = manifest["metadata"]
        assert manifest["apiVersion"] == resource.api_version and manifest["kind"] == resource.kind, manifest
        return self._object_key(what, resource, meta.get("namespace") if resource.namespaced else None, meta["name"])

    def admit(self, what: str, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        """What the API server checks of an object before storing it (nothing here)."""

    def read_object(self, resource: ApiResource, namespace: str | None, name: str) -> ObjectMeta | None:
        key = self._object_key(f"read {resource.describe(namespace, name)}", resource, namespace, name)
        found = self.objects.get(key)
        return object_meta_view(copy.deepcopy(found)) if found is not None else None

    def apply_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        what = f"apply {resource.describe(manifest['metadata'].get('namespace'), manifest['metadata']['name'])}"
        key = self._manifest_key(what, resource, manifest)
        self.admit(what, resource, manifest)
        self.objects[key] = copy.deepcopy(dict(manifest))
        self.calls.append(what)

    def create_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        what = f"create {resource.describe(manifest['metadata'].get('namespace'), manifest['metadata']['name'])}"
        key = self._manifest_key(what, resource, manifest)
        if key in self.objects:
            raise KubeApiError(
                what,
                f'the API server at {self.server} answered 409: {resource.crd} "{key[3]}" already exists',
                status=409,
                reason="Conflict",
            )
        self.admit(what, resource, manifest)
        self.objects[key] = copy.deepcopy(dict(manifest))
        self.calls.append(what)

    def delete_object(self, resource: ApiResource, namespace: str | None, name: str) -> bool:
        what = f"delete {resource.describe(namespace, name)}"
        if self._fails(what):
            self.broken.delete_object(resource, namespace, name)
        key = self._object_key(what, resource, namespace, name)
        self.calls.append(what)
        return self.objects.pop(key, None) is not None

    def list_objects(self, resource: ApiResource, label_selector: str) -> list[ObjectMeta]:
        """``label_selector``: comma-separated ``key``, ``key=value`` or ``key!=value``."""
        if not self.serves(resource):
            return []
        self.calls.append(f"list {resource.kubectl} ({label_selector})")
        out = []
        for (group, plural, _, _), manifest in sorted(self.objects.items(), key=lambda item: str(item[0])):
            labels = manifest["metadata"].get("labels") or {}
            if (group, plural) == (resource.group, resource.plural) and _selects(label_selector, labels):
                out.append(object_meta_view(copy.deepcopy(manifest)))
        return out

    def felix_configuration(self, name: str = "default") -> FelixConfigurationView | None:
        if not self.serves(FELIX_CONFIGURATION):
            return None
        found = self.objects.get((FELIX_CONFIGURATION.group, FELIX_CONFIGURATION.plural, None, name))
        return felix_configuration_view(copy.deepcopy(found)) if found is not None else None

    def close(self) -> None:
        self.closed = True
        self.servers.close()
        for proxies in self.proxies.values():
            for proxy in proxies.values():
                proxy.close()


def _selects(selector: str, labels: Mapping[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _implements_the_protocol(double: InMemoryCluster) -> KubeApi:
    """mypy checks here that the double has every call of the Protocol."""
    return double
