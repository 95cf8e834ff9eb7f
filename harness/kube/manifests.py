"""Namespace and pod manifests for a topology (plain dicts, no client needed).

Every pod runs one unprivileged agnhost container: ``agnhost porter`` serves each
declared port (TCP, UDP and SCTP, answering with the endpoint's id, so a probe
knows who answered), and the same container is the probe client: curl and OpenBSD
netcat, which the agnhost image installs (kubernetes test/images/agnhost/Dockerfile:
``apk add ... curl netcat-openbsd ...``), and ``/agnhost connect`` for SCTP. The root
file system is read-only; the probe script keeps the clients' output in a small
memory-backed ``emptyDir`` at /tmp. Pods carry exactly their declared labels:
bookkeeping goes in annotations, so that no selector of a scenario sees a label it
did not declare. Namespaces carry one label more, the run's scope label
(harness.kube.naming, SCOPE_LABEL), which no scenario may declare or select.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.core.services import ServiceSpec
from harness.core.topology import PodSpec, PortSpec, Protocol
from harness.kube.views import NodeView

CONTAINER = "agnhost"
#: ``nobody``: the image needs no user of its own.
RUN_AS_USER = 65534
#: A safe sysctl (allowed without kubelet configuration since Kubernetes 1.22)
#: that lets a non-root process bind ports below 1024 in its own network namespace.
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"

#: The probe script's scratch space: a memory-backed emptyDir (the root file system is read-only).
SCRATCH_DIR = "/tmp"
SCRATCH_SIZE = "16Mi"
#: The pod that checks, once per backend, what the probe image and the nodes' kernel offer.
CHECK_POD = "nph-environment-check"

ANNOTATION_RUN = "netpol-harness.io/run"
ANNOTATION_SCENARIO_NAMESPACE = "netpol-harness.io/scenario-namespace"
ANNOTATION_ENDPOINT = "netpol-harness.io/endpoint"

_PORTER_PREFIX = {Protocol.TCP: "SERVE_TCP_PORT_", Protocol.UDP: "SERVE_UDP_PORT_", Protocol.SCTP: "SERVE_SCTP_PORT_"}


def porter_env(ports: Iterable[PortSpec], identity: str, serve_sctp: bool = True) -> list[dict[str, str]]:
    """``agnhost porter`` environment: one variable per served port, whose value is
    the reply (``identity``). TCP is served as HTTP; UDP and SCTP answer any message.
    Without ``serve_sctp`` (a kernel without SCTP), SCTP ports are not served: porter
    exits when it cannot listen on one (agnhost porter/porter.go, serveSCTPPort)."""
    names = sorted({f"{_PORTER_PREFIX[p.protocol]}{p.port}" for p in ports if serve_sctp or p.protocol is not Protocol.SCTP})
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


def pod_manifest(
    pod: PodSpec, namespace: str, image: str, run_id: str, node: str | None = None, serve_sctp: bool = True
) -> dict[str, Any]:
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
        "env": porter_env(pod.ports, pod.id, serve_sctp),
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}},
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
    }
    if ports:
        container["ports"] = ports
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": SCRATCH_SIZE}}],
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


def schedulable_nodes(nodes: Iterable[NodeView]) -> list[str]:
    """Names of Ready Linux nodes without NoSchedule/NoExecute taints."""
    return sorted(
        node.name
        for node in nodes
        if node.ready
        and node.linux
        and not node.unschedulable
        and not any(t.effect in ("NoSchedule", "NoExecute") for t in node.taints)
    )


def check_pod_manifest(namespace: str, image: str, run_id: str, node: str | None) -> dict[str, Any]:
    """The environment check pod: the probe pods' image and security, serving nothing."""
    manifest = pod_manifest(PodSpec(namespace, CHECK_POD, {}), namespace, image, run_id, node)
    manifest["metadata"]["annotations"][ANNOTATION_ENDPOINT] = CHECK_POD
    return manifest


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
