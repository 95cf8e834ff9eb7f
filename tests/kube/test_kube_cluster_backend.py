"""The cluster backend's bookkeeping and probe rounds, with the API server replaced
by an in-memory double (tests/kube/cluster_double.py). Probes run for real: the
probe script with socat, against servers at each pod's loopback address."""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import subprocess

import pytest
from cluster_double import InMemoryCluster  # the helper modules beside this file
from loopback_api import LoopbackApiServer

from harness.backends.base import BackendInfo
from harness.backends.cluster.backend import ClusterBackend
from harness.core.errors import BackendError, BackendUnavailable
from harness.core.matrix import Outcome
from harness.core.policy import parse_policy
from harness.core.topology import (
    NAMESPACE_NAME_LABEL,
    ExternalHost,
    NamespaceSpec,
    PodSpec,
    PortProtocol,
    PortSpec,
    Protocol,
    Topology,
)
from harness.kube.client import KubeClient
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.naming import NamespaceMap
from tests.drivers import Probe, StepDriver

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat (apt-get install socat)")

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
HTTP = PortSpec(8080, Protocol.TCP, "http")
DNS = PortSpec(5353, Protocol.UDP)
TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("shop", {"env": "prod"}), NamespaceSpec("kube-system")),
    pods=(
        PodSpec("shop", "web", {"app": "web"}, (HTTP,)),
        PodSpec("shop", "api", {"app": "api"}, (HTTP,)),
        PodSpec("kube-system", "dns", {"k8s-app": "kube-dns"}, (DNS,)),
    ),
    externals=(ExternalHost("public-api", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(443),)),),
)
POLICY = parse_policy(
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "dns-only", "namespace": "shop"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}}}]}],
        },
    }
)


class SharedClusterBackend(ClusterBackend):
    name = "existing"
    poll = 0.01

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, "in-memory double")

    def close(self) -> None:
        self.close_namespaces()


@pytest.fixture
def cluster():
    double = InMemoryCluster(ready_after=3)
    yield double
    double.servers.close()


def backend_on(cluster, run_id="r1", adopt=False, messages=None):
    """The backend, driven step by step as the pipeline does (deploy, then converge)."""
    names = NamespaceMap(None if adopt else run_id)
    log = messages if messages is not None else []
    return StepDriver(SharedClusterBackend(cluster, names, IMAGE, log.append, adopt_existing_namespaces=adopt, run_id=run_id))


def probes(topology, *cells):
    out = []
    for source, destination, port in cells:
        out.append(Probe(topology.pod(source), topology.endpoint(destination), PortProtocol.parse(port)))
    return out


def test_deploy_probe_relabel_reset_close_on_a_shared_cluster(cluster):
    messages: list[str] = []
    backend = backend_on(cluster, messages=messages)
    deployment = backend.deploy(TOPOLOGY)

    assert set(cluster.namespaces) == {"nph-r1-shop", "nph-r1-kube-system"}
    shop = cluster.namespaces["nph-r1-shop"]["metadata"]
    assert shop["labels"] == {"env": "prod", NAMESPACE_NAME_LABEL: "nph-r1-shop"}
    assert shop["annotations"][ANNOTATION_RUN] == "r1"
    placement = [cluster.pods[k]["spec"]["nodeSelector"]["kubernetes.io/hostname"] for k in sorted(cluster.pods)]
    assert sorted(placement) == ["worker", "worker", "worker2"]  # never the tainted control plane
    assert str(deployment.addresses["shop/web"]).startswith("127.0.")
    assert any("waiting for 3 pod(s) to be Ready" in m for m in messages)

    cells = probes(
        TOPOLOGY,
        ("shop/web", "shop/api", "8080/TCP"),
        ("shop/api", "shop/web", "8080/TCP"),
        ("shop/web", "kube-system/dns", "5353/UDP"),
        ("kube-system/dns", "shop/web", "8080/TCP"),
        ("shop/web", "public-api", "443/TCP"),
    )
    seen = backend.probe(cells, timeout=1.0)
    assert [seen[c].outcome for c in cells] == [Outcome.ALLOWED] * 4 + [Outcome.UNSUPPORTED]
    # One exec per source pod, plus the one that looks for socat after deploying.
    assert sorted(c for c in cluster.calls if c.startswith("exec")) == [
        "exec nph-r1-kube-system/dns",
        "exec nph-r1-shop/api",
        "exec nph-r1-shop/web",
        "exec nph-r1-shop/web",
    ]
    web_to_api = seen[cells[0]].command
    assert web_to_api.startswith(
        "kubectl --kubeconfig /tmp/kubeconfig-of-the-double --context double exec -n nph-r1-shop web -c agnhost -- sh -c "
    )
    assert f"TCP4:{deployment.addresses['shop/api']}:8080" in web_to_api
    assert web_to_api == backend.reproduce_command(cells[0])

    backend.apply_policies([POLICY])
    applied = cluster.policies[("nph-r1-shop", "dns-only")]
    assert applied["spec"]["egress"][0]["to"][0]["namespaceSelector"] == {
        "matchLabels": {NAMESPACE_NAME_LABEL: "nph-r1-kube-system"}
    }
    backend.set_namespace_labels("shop", {"env": "dev", NAMESPACE_NAME_LABEL: "shop"})
    backend.set_pod_labels("shop/web", {"app": "legacy"})
    assert cluster.namespaces["nph-r1-shop"]["metadata"]["labels"] == {"env": "dev", NAMESPACE_NAME_LABEL: "nph-r1-shop"}
    assert cluster.pods[("nph-r1-shop", "web")]["metadata"]["labels"] == {"app": "legacy"}
    backend.delete_policies(["shop/dns-only", "shop/never-applied"])
    assert cluster.policies == {}

    backend.apply_policies([POLICY])
    backend.reset()
    assert cluster.policies == {}
    assert cluster.namespaces["nph-r1-shop"]["metadata"]["labels"]["env"] == "prod"
    assert cluster.pods[("nph-r1-shop", "web")]["metadata"]["labels"] == {"app": "web"}

    backend.close()
    backend.close()  # safe twice
    assert sorted(cluster.deleted_namespaces) == ["nph-r1-kube-system", "nph-r1-shop"]
    assert cluster.closed


def test_same_shape_reuses_pods_and_another_shape_replaces_them(cluster):
    backend = backend_on(cluster)
    backend.deploy(TOPOLOGY)
    created = [c for c in cluster.calls if c.startswith("create pod")]
    relabelled = TOPOLOGY.with_pod_labels("shop/api", {"app": "api", "v": "2"})
    backend.deploy(relabelled)
    assert [c for c in cluster.calls if c.startswith("create pod")] == created
    assert cluster.pods[("nph-r1-shop", "api")]["metadata"]["labels"] == {"app": "api", "v": "2"}

    smaller = Topology(namespaces=(NamespaceSpec("shop"),), pods=(PodSpec("shop", "web", {}, (HTTP,)),))
    deployment = backend.deploy(smaller)
    assert set(cluster.namespaces) == {"nph-r1-shop"}
    assert list(cluster.pods) == [("nph-r1-shop", "web")]
    assert set(deployment.addresses) == {"shop/web"}
    backend.close()


def test_someone_elses_server_is_a_wrong_responder():
    cluster = InMemoryCluster()
    cluster.identity_override["shop/api"] = "shop/web"  # api's address answers as web
    backend = backend_on(cluster)
    try:
        backend.deploy(TOPOLOGY)
        cell = probes(TOPOLOGY, ("shop/web", "shop/api", "8080/TCP"))[0]
        seen = backend.probe([cell], timeout=1.0)[cell]
        assert (seen.outcome, seen.detail) == (Outcome.WRONG_RESPONDER, "answered by shop/web")
    finally:
        backend.close()


def test_own_cluster_adopts_existing_namespaces_and_gives_them_back(cluster):
    cluster.namespaces["kube-system"] = {
        "metadata": {"name": "kube-system", "labels": {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}}
    }
    backend = backend_on(cluster, adopt=True)
    backend.deploy(TOPOLOGY)
    assert "create namespace kube-system" not in cluster.calls
    assert cluster.namespaces["kube-system"]["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "kube-system"}
    dns_policy = parse_policy({**POLICY.manifest, "metadata": {"name": "p", "namespace": "kube-system"}})
    backend.apply_policies([dns_policy])
    backend.close()
    assert "delete namespace kube-system" not in cluster.calls
    assert "delete pod kube-system/dns" in cluster.calls
    assert ("kube-system", "p") not in cluster.policies
    assert cluster.namespaces["kube-system"]["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}
    assert cluster.deleted_namespaces == ["shop"]


def test_shared_cluster_never_takes_over_a_namespace(cluster):
    cluster.namespaces["nph-r1-shop"] = {"metadata": {"name": "nph-r1-shop", "labels": {}}}
    backend = backend_on(cluster)
    with pytest.raises(BackendError, match="namespace nph-r1-shop already exists on the cluster and was not created"):
        backend.deploy(TOPOLOGY)


def test_leftovers_of_an_interrupted_run_are_removed_first(cluster):
    cluster.namespaces["shop"] = {"metadata": {"name": "shop", "labels": {}, "annotations": {ANNOTATION_RUN: "old"}}}
    messages: list[str] = []
    backend = backend_on(cluster, adopt=True, messages=messages)
    backend.deploy(TOPOLOGY)
    assert cluster.calls.index("delete namespace shop") < cluster.calls.index("create namespace shop")
    assert any("left over by an earlier run" in m for m in messages)
    backend.close()


def test_an_image_the_cluster_cannot_pull(cluster):
    cluster.pod_waiting_reason = "ImagePullBackOff"
    backend = backend_on(cluster)
    with pytest.raises(BackendUnavailable, match=f"the cluster cannot pull {IMAGE} \\(ImagePullBackOff"):
        backend.deploy(TOPOLOGY)
    backend.close()
    assert sorted(cluster.deleted_namespaces) == ["nph-r1-kube-system", "nph-r1-shop"]


def test_pods_that_never_get_ready_time_out_with_their_state(cluster):
    cluster.ready_after = 10**9
    backend = backend_on(cluster)
    backend.backend.pods_ready_timeout = 0.3
    with pytest.raises(BackendError) as err:
        backend.deploy(TOPOLOGY)
    assert "waiting for 3 pod(s) to be Ready: gave up" in str(err.value)
    assert "nph-r1-shop/web: Pending" in str(err.value)
    backend.close()


def test_a_failed_deploy_leaves_reset_harmless_and_close_complete(cluster):
    cluster.pod_waiting_reason = "CrashLoopBackOff"
    backend = backend_on(cluster)
    with pytest.raises(BackendError, match=r"pod nph-r1-[a-z-]+/[a-z]+: CrashLoopBackOff: rpc error"):
        backend.deploy(TOPOLOGY)
    backend.reset()  # nothing was deployed: nothing to converge
    cluster.pod_waiting_reason = None
    backend.deploy(TOPOLOGY)  # the next scenario starts clean
    assert cluster.calls.count("delete namespace nph-r1-shop") == 1
    backend.close()
    assert cluster.calls.count("delete namespace nph-r1-shop") == 2


# -- teardown when the API server fails ---------------------------------------------------


@pytest.fixture
def broken_api(tmp_path):
    """A real client whose API server resets every connection."""
    server = LoopbackApiServer()
    client = KubeClient(str(server.kubeconfig(tmp_path)))
    yield client
    client.close()
    server.close()


KUBECTL = "kubectl --kubeconfig /tmp/kubeconfig-of-the-double --context double"


def borrowed_kube_system(cluster):
    cluster.namespaces["kube-system"] = {
        "metadata": {"name": "kube-system", "labels": {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}}
    }


def test_one_failed_deletion_does_not_stop_the_cleanup_and_is_tried_again(cluster, broken_api):
    borrowed_kube_system(cluster)
    backend = backend_on(cluster, adopt=True)
    backend.deploy(TOPOLOGY)
    backend.apply_policies([parse_policy({**POLICY.manifest, "metadata": {"name": "p", "namespace": "kube-system"}})])
    cluster.broken = broken_api
    cluster.broken_calls = {"delete namespace shop", "delete NetworkPolicy kube-system/p"}

    smaller = Topology(namespaces=(NamespaceSpec("shop"),), pods=(PodSpec("shop", "web", {}, (HTTP,)),))
    with pytest.raises(BackendError) as err:
        backend.deploy(smaller)
    message = str(err.value)
    server = broken_api.server
    assert message == (
        "cleanup was incomplete:\n"
        f"  - cannot delete namespace shop: no answer from the API server at {server} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)\n"
        f"  - cannot delete NetworkPolicy kube-system/p: no answer from the API server at {server} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)\n"
        "left on the cluster; remove it with:\n"
        f"  {KUBECTL} delete namespace shop\n"
        f"  {KUBECTL} delete networkpolicy -n kube-system p"
    )
    # Everything else was still removed or given back.
    assert "delete pod kube-system/dns" in cluster.calls
    assert cluster.namespaces["kube-system"]["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}
    assert "shop" in cluster.namespaces and ("kube-system", "p") in cluster.policies

    cluster.broken_calls = set()  # the API server answers again: the next deploy finishes the job first
    calls_before = len(cluster.calls)
    backend.deploy(smaller)
    retried = cluster.calls[calls_before:]
    assert retried.index("delete namespace shop") < retried.index("create namespace shop")
    assert ("kube-system", "p") not in cluster.policies
    backend.close()
    assert cluster.calls.count("delete namespace shop") == 2


def test_labels_that_could_not_be_given_back_come_with_the_command_that_restores_them(cluster, broken_api):
    borrowed_kube_system(cluster)
    backend = backend_on(cluster, adopt=True)
    backend.deploy(TOPOLOGY)
    cluster.broken = broken_api
    cluster.broken_calls = {"relabel namespace kube-system"}
    with pytest.raises(BackendError, match="cannot relabel namespace kube-system: no answer from the API server") as err:
        backend.close()
    assert cluster.deleted_namespaces == ["shop"]
    command = str(err.value).splitlines()[-1].strip()
    words = shlex.split(command)
    assert words[:-2] == [*KUBECTL.split(), "patch", "namespace", "kube-system", "--type=json"]
    assert words[-2] == "-p"
    assert json.loads(words[-1]) == [{"op": "add", "path": "/metadata/labels", "value": {"team": "core"}}]


def test_reproduce_command_for_an_endpoint_without_address_is_safe_to_paste(cluster, tmp_path):
    backend = backend_on(cluster)
    backend.deploy(Topology(namespaces=(NamespaceSpec("shop"),), pods=(PodSpec("shop", "web", {}, (HTTP,)),)))
    elsewhere = PodSpec("shop", "api", {}, (HTTP,))
    command = backend.reproduce_command(Probe(TOPOLOGY.pod("shop/web"), elsewhere, PortProtocol.parse("8080/TCP")))
    backend.close()
    script = shlex.split(command)[-1]
    assert shlex.split(script)[-1] == "TCP4:<address of shop/api>:8080,connect-timeout=1"
    # Run by a real shell with socat replaced by a function that prints its arguments:
    # the placeholder is one argument, and no redirection creates or reads a file.
    shown = subprocess.run(
        ["sh", "-c", 'socat() { printf "%s\\n" "$@"; }; ' + script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert shown.stdout.splitlines()[-1] == "TCP4:<address of shop/api>:8080,connect-timeout=1"
    assert list(tmp_path.iterdir()) == []
