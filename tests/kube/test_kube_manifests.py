"""Namespace and pod manifests: valid for the API server of the pinned node image,
unprivileged, labelled exactly as declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness.core.topology import POD_CIDR, PodSpec, PortSpec, Protocol
from harness.kube.manifests import (
    ANNOTATION_ENDPOINT,
    ANNOTATION_RUN,
    CONTAINER,
    UNPRIVILEGED_PORT_SYSCTL,
    check_pod_manifest,
    namespace_manifest,
    pod_manifest,
    porter_env,
    schedulable_nodes,
    spread_over_nodes,
)
from harness.kube.versions import PinnedVersions, kubernetes_version_of
from harness.kube.views import node_view

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
WEB = PodSpec("shop", "web", {"app": "web", "tier": "front"}, (PortSpec(8080, Protocol.TCP, "http"), PortSpec(53, Protocol.UDP)))
SCTP_ONLY = PodSpec("shop", "sctp", {}, (PortSpec(9000, Protocol.SCTP),))


@pytest.fixture(scope="module")
def k8s_version(versions: PinnedVersions) -> str:
    return kubernetes_version_of(versions.node_image("3.31")).lstrip("v")


def validate(manifest: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def test_namespace_manifest_is_valid(k8s_version: str) -> None:
    manifest = namespace_manifest("nph-ab12cd-shop", {"env": "prod"}, "ab12cd", "shop")
    validate(manifest, k8s_version)
    assert manifest["metadata"]["labels"] == {"env": "prod"}
    assert manifest["metadata"]["annotations"][ANNOTATION_RUN] == "ab12cd"


@pytest.mark.parametrize("pod", [WEB, SCTP_ONLY, PodSpec("x", "client", {"a": "b"})], ids=["tcp-udp", "sctp", "no-ports"])
def test_pod_manifest_is_valid(pod: PodSpec, k8s_version: str) -> None:
    validate(pod_manifest(pod, pod.namespace, IMAGE, "ab12cd", "kind-worker2"), k8s_version)


def test_pod_runs_unprivileged() -> None:
    manifest = pod_manifest(WEB, "shop", IMAGE, "ab12cd")
    pod_security = manifest["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = manifest["spec"]["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert "privileged" not in security
    assert manifest["spec"]["automountServiceAccountToken"] is False
    assert manifest["spec"].get("hostNetwork") is None


def test_low_ports_come_with_the_unprivileged_port_sysctl_only_when_needed() -> None:
    low = pod_manifest(WEB, "shop", IMAGE, "r1")  # serves 53/UDP
    assert low["spec"]["securityContext"]["sysctls"] == [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}]
    high = pod_manifest(SCTP_ONLY, "shop", IMAGE, "r1")
    assert "sysctls" not in high["spec"]["securityContext"]


def test_pod_carries_exactly_its_declared_labels_and_named_ports() -> None:
    manifest = pod_manifest(WEB, "nph-r1-shop", IMAGE, "r1", "kind-worker")
    assert manifest["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert manifest["metadata"]["namespace"] == "nph-r1-shop"
    assert manifest["metadata"]["annotations"][ANNOTATION_ENDPOINT] == "shop/web"
    (container,) = manifest["spec"]["containers"]
    assert container["name"] == CONTAINER
    assert container["image"] == IMAGE
    assert container["ports"] == [
        {"containerPort": 53, "protocol": "UDP"},
        {"containerPort": 8080, "protocol": "TCP", "name": "http"},
    ]
    assert manifest["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "kind-worker"}


def test_porter_serves_every_port_and_answers_with_the_endpoint_id() -> None:
    manifest = pod_manifest(WEB, "shop", IMAGE, "r1")
    (container,) = manifest["spec"]["containers"]
    assert container["args"] == ["porter"]
    assert container["env"] == [
        {"name": "SERVE_TCP_PORT_8080", "value": "shop/web"},
        {"name": "SERVE_UDP_PORT_53", "value": "shop/web"},
    ]
    assert porter_env(SCTP_ONLY.ports, "x") == [{"name": "SERVE_SCTP_PORT_9000", "value": "x"}]


def test_pods_alternate_over_nodes() -> None:
    pods = [PodSpec("x", n) for n in "abcde"]
    placement = spread_over_nodes(pods, ["kind-worker2", "kind-worker"])
    assert [placement[p.id] for p in pods] == ["kind-worker", "kind-worker2", "kind-worker", "kind-worker2", "kind-worker"]
    assert spread_over_nodes(pods, [])["x/a"] is None


def node(
    name: str, ready: bool = True, taints: tuple[dict[str, str], ...] = (), unschedulable: bool = False, os: str = "linux"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": os}},
        "spec": {"taints": list(taints), "unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_only_ready_untainted_linux_nodes_take_probe_pods() -> None:
    nodes = [
        node("kind-control-plane", taints=({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},)),
        node("kind-worker2"),
        node("kind-worker"),
        node("not-ready", ready=False),
        node("cordoned", unschedulable=True),
        node("win", os="windows"),
        node("soft", taints=({"key": "x", "effect": "PreferNoSchedule"},)),
    ]
    assert schedulable_nodes([node_view(n) for n in nodes]) == ["kind-worker", "kind-worker2", "soft"]


def test_kind_config_follows_calicos_kind_guide(clusters: Path) -> None:
    config = yaml.safe_load((clusters / "kind-calico.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"] == {"disableDefaultCNI": True, "podSubnet": "192.168.0.0/16"}
    # The pod range every backend shares (ipBlock scenarios rely on it).
    assert config["networking"]["podSubnet"] == str(POD_CIDR)
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]


def test_the_probe_script_has_a_small_memory_backed_scratch_space() -> None:
    manifest = pod_manifest(WEB, "shop", IMAGE, "ab12cd")
    assert manifest["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    (container,) = manifest["spec"]["containers"]
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]


def test_sctp_ports_are_declared_but_not_served_without_sctp() -> None:
    pod = PodSpec("shop", "mixed", {}, (PortSpec(80), PortSpec(9000, Protocol.SCTP, "sctp")))
    manifest = pod_manifest(pod, "shop", IMAGE, "ab12cd", serve_sctp=False)
    (container,) = manifest["spec"]["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [80, 9000]  # named ports still resolve
    assert container["env"] == [{"name": "SERVE_TCP_PORT_80", "value": "shop/mixed"}]


def test_the_environment_check_pod_is_valid_and_serves_nothing(k8s_version: str) -> None:
    manifest = check_pod_manifest("nph-r1-shop", IMAGE, "r1", "kind-worker")
    validate(manifest, k8s_version)
    assert manifest["metadata"]["name"] == "nph-environment-check" and manifest["metadata"]["labels"] == {}
    assert manifest["spec"]["containers"][0]["env"] == [] and "ports" not in manifest["spec"]["containers"][0]
