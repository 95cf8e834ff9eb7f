"""Namespace and pod manifests: valid for the API server of the pinned node image,
unprivileged, labelled exactly as declared."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from harness.core.topology import POD_CIDR, PodSpec, PortSpec, Protocol
from harness.kube.manifests import (
    ANNOTATION_ENDPOINT,
    ANNOTATION_RUN,
    CONTAINER,
    UNPRIVILEGED_PORT_SYSCTL,
    namespace_manifest,
    pod_manifest,
    porter_env,
    schedulable_nodes,
    spread_over_nodes,
)
from harness.kube.versions import kubernetes_version_of

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
WEB = PodSpec("shop", "web", {"app": "web", "tier": "front"}, (PortSpec(8080, Protocol.TCP, "http"), PortSpec(53, Protocol.UDP)))
SCTP_ONLY = PodSpec("shop", "sctp", {}, (PortSpec(9000, Protocol.SCTP),))


@pytest.fixture(scope="module")
def k8s_version(versions) -> str:
    return kubernetes_version_of(versions.node_image("3.31")).lstrip("v")


def validate(manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def test_namespace_manifest_is_valid(k8s_version):
    manifest = namespace_manifest("nph-ab12cd-shop", {"env": "prod"}, "ab12cd", "shop")
    validate(manifest, k8s_version)
    assert manifest["metadata"]["labels"] == {"env": "prod"}
    assert manifest["metadata"]["annotations"][ANNOTATION_RUN] == "ab12cd"


@pytest.mark.parametrize("pod", [WEB, SCTP_ONLY, PodSpec("x", "client", {"a": "b"})], ids=["tcp-udp", "sctp", "no-ports"])
def test_pod_manifest_is_valid(pod, k8s_version):
    validate(pod_manifest(pod, pod.namespace, IMAGE, "ab12cd", "kind-worker2"), k8s_version)


def test_pod_runs_unprivileged():
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


def test_low_ports_come_with_the_unprivileged_port_sysctl_only_when_needed():
    low = pod_manifest(WEB, "shop", IMAGE, "r1")  # serves 53/UDP
    assert low["spec"]["securityContext"]["sysctls"] == [{"name": UNPRIVILEGED_PORT_SYSCTL, "value": "0"}]
    high = pod_manifest(SCTP_ONLY, "shop", IMAGE, "r1")
    assert "sysctls" not in high["spec"]["securityContext"]


def test_pod_carries_exactly_its_declared_labels_and_named_ports():
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


def test_porter_serves_every_port_and_answers_with_the_endpoint_id():
    manifest = pod_manifest(WEB, "shop", IMAGE, "r1")
    (container,) = manifest["spec"]["containers"]
    assert container["args"] == ["porter"]
    assert container["env"] == [
        {"name": "SERVE_TCP_PORT_8080", "value": "shop/web"},
        {"name": "SERVE_UDP_PORT_53", "value": "shop/web"},
    ]
    assert porter_env(SCTP_ONLY.ports, "x") == [{"name": "SERVE_SCTP_PORT_9000", "value": "x"}]


def test_pods_alternate_over_nodes():
    pods = [PodSpec("x", n) for n in "abcde"]
    placement = spread_over_nodes(pods, ["kind-worker2", "kind-worker"])
    assert [placement[p.id] for p in pods] == ["kind-worker", "kind-worker2", "kind-worker", "kind-worker2", "kind-worker"]
    assert spread_over_nodes(pods, [])["x/a"] is None


def node(name, ready=True, taints=(), unschedulable=False, os="linux"):
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": os}},
        "spec": {"taints": list(taints), "unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_only_ready_untainted_linux_nodes_take_probe_pods():
    nodes = [
        node("kind-control-plane", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        node("kind-worker2"),
        node("kind-worker"),
        node("not-ready", ready=False),
        node("cordoned", unschedulable=True),
        node("win", os="windows"),
        node("soft", taints=[{"key": "x", "effect": "PreferNoSchedule"}]),
    ]
    assert schedulable_nodes(nodes) == ["kind-worker", "kind-worker2", "soft"]


def test_kind_config_follows_calicos_kind_guide(clusters):
    config = yaml.safe_load((clusters / "kind-calico.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"] == {"disableDefaultCNI": True, "podSubnet": "192.168.0.0/16"}
    # The pod range every backend shares (ipBlock scenarios rely on it).
    assert config["networking"]["podSubnet"] == str(POD_CIDR)
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]
