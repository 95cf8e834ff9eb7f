"""Namespace and pod manifests for a topology (plain dicts, no client needed).

Every pod runs one unprivileged agnhost container: ``agnhost porter`` serves each
declared port (TCP, UDP and SCTP, answering with the endpoint's id, so a probe
knows who answered), and the same container is the probe client (sh, socat,
``/agnhost connect``). Pods carry exactly their declared labels: bookkeeping goes
in annotations, so that no selector of a scenario sees a label it did not declare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.core.services import ServiceSpec
from harness.core.topology import PodSpec, PortSpec, Protocol

CONTAINER = "agnhost"
#: ``nobody``: the image needs no user of its own.
RUN_AS_USER = 65534
#: A safe sysctl (allowed without kubelet configuration since Kubernetes 1.22)
#: that lets a non-root process bind ports below 1024 in its own network namespace.
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"

ANNOTATION_RUN = "netpol-harness.io/run"
ANNOTATION_SCENARIO_NAMESPACE = "netpol-harness.io/scenario-namespace"
ANNOTATION_ENDPOINT = "netpol-harness.io/endpoint"

_PORTER_PREFIX = {Protocol.TCP: "SERVE_TCP_PORT_", Protocol.UDP: "SERVE_UDP_PORT_", Protocol.SCTP: "SERVE_SCTP_PORT_"}


def porter_env(ports: Iterable[PortSpec], identity: str) -> list[dict[str, str]]:
    """``agnhost porter`` environment: one variable per served port, whose value is
    the reply (``identity``). TCP is served as HTTP; UDP and SCTP answer any message."""
    names = sorted({f"{_PORTER_PREFIX[p.protocol]}{p.port}" for p in ports})
    return [{"name": name, "value": identity} for name in names]


def needs_low_ports(ports: Iterable[PortSpec]) -> bool:
    return any(p.port < 1024 for p in ports)


def namespace_manifest(name: str, labels: Mapping[str, str], run_id: str, scenario_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": dict(labels),
            "annotations": {ANNOTATION_RUN: run_id, ANNOTATION_SCENARIO_NAMESPACE: scenario_name},
        },
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_manifest(pod: PodSpec, namespace: str, image: str, run_id: str, node: str | None = None) -> dict[str, Any]:
    """The pod for ``pod`` in the real namespace ``namespace``."""
    ports: list[dict[str, Any]] = []
    for port in sorted(pod.ports, key=lambda p: (p.port, p.protocol.value)):
        entry: dict[str, Any] = {"containerPort": port.port, "protocol": port.protocol.value}
        if port.name:
            entry["name"] = port.name
        ports.append(entry)
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if needs_low_ports(pod.ports):
        pod_security["sysctls"] = [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["porter"],
        "env": porter_env(pod.ports, pod.id),
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
    }
    if ports:
        container["ports"] = ports
    spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": pod_security,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # porter ignores SIGTERM; nothing to drain.
        "terminationGracePeriodSeconds": 0,
        "restartPolicy": "Always",
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": namespace,
            "labels": dict(pod.labels),
            "annotations": {ANNOTATION_RUN: run_id, ANNOTATION_ENDPOINT: pod.id},
        },
        "spec": spec,
    }


def spread_over_nodes(pods: Sequence[PodSpec], nodes: Sequence[str]) -> dict[str, str | None]:
    """Round-robin placement, so that neighbouring pods (a, b, c of a namespace)
    land on different nodes and their traffic crosses the node network. The
    scheduler still checks the placement (``nodeSelector``, not ``nodeName``)."""
    ordered = sorted(nodes)
    return {pod.id: (ordered[i % len(ordered)] if ordered else None) for i, pod in enumerate(pods)}


def schedulable_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of Ready nodes without NoSchedule/NoExecute taints, from Node objects as dicts."""
    names = []
    for node in nodes:
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        if spec.get("unschedulable"):
            continue
        if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or []):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        labels = (node.get("metadata") or {}).get("labels") or {}
        if ready and labels.get("kubernetes.io/os", "linux") == "linux":
            names.append(str((node.get("metadata") or {}).get("name")))
    return sorted(names)


def service_manifest(service: ServiceSpec, namespace: str, run_id: str) -> dict[str, Any]:
    """The ClusterIP Service for ``service`` in the real namespace ``namespace``: its
    selector and ports (``targetPort`` a number or a container port name), the
    cluster IP left to the API server."""
    ports = []
    for port in service.ports:
        entry: dict[str, Any] = {"port": port.port, "protocol": port.protocol.value, "targetPort": port.target}
        if port.name:
            entry["name"] = port.name
        ports.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service.name,
            "namespace": namespace,
            "annotations": {ANNOTATION_RUN: run_id, ANNOTATION_ENDPOINT: service.id},
        },
        "spec": {"type": "ClusterIP", "selector": dict(service.selector), "ports": ports},
    }
