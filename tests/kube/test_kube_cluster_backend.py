"""The cluster backend's bookkeeping and probe rounds, with the API server replaced
by an in-memory double (tests/kube/cluster_double.py). Probes run for real: the
probe script with curl and nc, against servers at each pod's loopback address; the
environment check reads this machine's real /proc/net/protocols (no SCTP here)."""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import cast

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
from harness.kube.environment import ProbeEnvironment
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.naming import SCOPE_LABEL, NamespaceMap
from tests.drivers import Probe, StepDriver

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "nc")), reason="needs curl and nc (apt-get install curl netcat-openbsd)"
)

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
def cluster() -> Iterator[InMemoryCluster]:
    double = InMemoryCluster(ready_after=3)
    yield double
    double.servers.close()


def backend_on(
    cluster: InMemoryCluster,
    run_id: str = "r1",
    adopt: bool = False,
    messages: list[str] | None = None,
    reserved: tuple[str, ...] = (),
) -> StepDriver:
    """The backend, driven step by step as the pipeline does (deploy, then converge)."""
    names = NamespaceMap(None if adopt else run_id, reserved=reserved)
    log = messages if messages is not None else []
    return StepDriver(SharedClusterBackend(cluster, names, IMAGE, log.append, adopt_existing_namespaces=adopt, run_id=run_id))


def probes(topology: Topology, *cells: tuple[str, str, str]) -> list[Probe]:
    out = []
    for source, destination, port in cells:
        out.append(Probe(topology.pod(source), topology.endpoint(destination), PortProtocol.parse(port)))
    return out


def test_deploy_probe_relabel_reset_close_on_a_shared_cluster(cluster: InMemoryCluster) -> None:
    messages: list[str] = []
    backend = backend_on(cluster, messages=messages)
    deployment = backend.deploy(TOPOLOGY)

    assert set(cluster.namespaces) == {"nph-r1-shop", "nph-r1-kube-system"}
    shop = cluster.namespaces["nph-r1-shop"]["metadata"]
    # The declared labels, the name label, and the run's mark, which scopes cluster-scoped policies to the run.
    assert shop["labels"] == {"env": "prod", NAMESPACE_NAME_LABEL: "nph-r1-shop", SCOPE_LABEL: "r1"}
    assert shop["annotations"][ANNOTATION_RUN] == "r1"
    placement = [cluster.pods[k]["spec"]["nodeSelector"]["kubernetes.io/hostname"] for k in sorted(cluster.pods)]
    assert sorted(placement) == ["worker", "worker", "worker2"]  # never the tainted control plane
    assert str(deployment.addresses["shop/web"]).startswith(cluster.subnet + ".")
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
    # One exec per source pod, after the one in the environment check pod (deleted since).
    assert sorted(c for c in cluster.calls if c.startswith("exec")) == [
        "exec nph-r1-kube-system/dns",
        "exec nph-r1-shop/api",
        "exec nph-r1-shop/nph-environment-check",
        "exec nph-r1-shop/web",
    ]
    assert ("nph-r1-shop", "nph-environment-check") not in cluster.pods
    web_to_api = seen[cells[0]].command
    assert web_to_api == (
        "kubectl --kubeconfig /tmp/kubeconfig-of-the-double --context double exec -n nph-r1-shop web -c agnhost -- "
        f"curl -q -sS -v --noproxy '*' --connect-timeout 1 -m 1 http://{deployment.addresses['shop/api']}:8080/"
    )
    assert web_to_api == backend.reproduce_command(cells[0])
    assert seen[cells[2]].command.startswith("echo probe | kubectl --kubeconfig /tmp/kubeconfig-of-the-double --context ")

    backend.apply_policies([POLICY])
    applied = cluster.policies[("nph-r1-shop", "dns-only")]
    assert applied["spec"]["egress"][0]["to"][0]["namespaceSelector"] == {
        "matchLabels": {NAMESPACE_NAME_LABEL: "nph-r1-kube-system"}
    }
    backend.set_namespace_labels("shop", {"env": "dev", NAMESPACE_NAME_LABEL: "shop"})
    backend.set_pod_labels("shop/web", {"app": "legacy"})
    assert cluster.namespaces["nph-r1-shop"]["metadata"]["labels"] == {
        "env": "dev",
        NAMESPACE_NAME_LABEL: "nph-r1-shop",
        SCOPE_LABEL: "r1",  # kept through relabels
    }
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


def test_same_shape_reuses_pods_and_another_shape_replaces_them(cluster: InMemoryCluster) -> None:
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


def test_someone_elses_server_is_a_wrong_responder() -> None:
    cluster = InMemoryCluster()
    cluster.identity_override["shop/api"] = "shop/web"  # api's address answers as web
    backend = backend_on(cluster)
    try:
        backend.deploy(TOPOLOGY)
        cell = probes(TOPOLOGY, ("shop/web", "shop/api", "8080/TCP"))[0]
        seen = backend.probe([cell], timeout=1.0)[cell]
        assert (seen.outcome, seen.detail) == (Outcome.WRONG_RESPONDER, "answered by 'shop/web', expected 'shop/api'")
    finally:
        backend.close()


def test_own_cluster_adopts_existing_namespaces_and_gives_them_back(cluster: InMemoryCluster) -> None:
    cluster.namespaces["kube-system"] = {
        "metadata": {"name": "kube-system", "labels": {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}}
    }
    backend = backend_on(cluster, adopt=True)
    backend.deploy(TOPOLOGY)
    assert "create namespace kube-system" not in cluster.calls
    assert cluster.namespaces["kube-system"]["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "kube-system", SCOPE_LABEL: "r1"}
    dns_policy = parse_policy({**POLICY.manifest, "metadata": {"name": "p", "namespace": "kube-system"}})
    backend.apply_policies([dns_policy])
    backend.close()
    assert "delete namespace kube-system" not in cluster.calls
    assert "delete pod kube-system/dns" in cluster.calls
    assert ("kube-system", "p") not in cluster.policies
    assert cluster.namespaces["kube-system"]["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}
    assert cluster.deleted_namespaces == ["shop"]


def test_shared_cluster_never_takes_over_a_namespace(cluster: InMemoryCluster) -> None:
    cluster.namespaces["nph-r1-shop"] = {"metadata": {"name": "nph-r1-shop", "labels": {}}}
    backend = backend_on(cluster)
    with pytest.raises(BackendError, match="namespace nph-r1-shop already exists on the cluster and was not created"):
        backend.deploy(TOPOLOGY)


def test_leftovers_of_an_interrupted_run_are_removed_first(cluster: InMemoryCluster) -> None:
    cluster.namespaces["shop"] = {"metadata": {"name": "shop", "labels": {}, "annotations": {ANNOTATION_RUN: "old"}}}
    messages: list[str] = []
    backend = backend_on(cluster, adopt=True, messages=messages)
    backend.deploy(TOPOLOGY)
    assert cluster.calls.index("delete namespace shop") < cluster.calls.index("create namespace shop")
    assert any("left over by an earlier run" in m for m in messages)
    backend.close()


def test_an_image_the_cluster_cannot_pull(cluster: InMemoryCluster) -> None:
    cluster.pod_waiting_reason = "ImagePullBackOff"
    backend = backend_on(cluster)
    with pytest.raises(BackendUnavailable, match=f"the cluster cannot pull {IMAGE} \\(ImagePullBackOff"):
        backend.deploy(TOPOLOGY)
    backend.close()
    assert sorted(cluster.deleted_namespaces) == ["nph-r1-kube-system", "nph-r1-shop"]


def test_pods_that_never_get_ready_time_out_with_their_state(cluster: InMemoryCluster) -> None:
    cluster.ready_after = 10**9
    backend = backend_on(cluster)
    shared = cast(SharedClusterBackend, backend.backend)
    shared.pods_ready_timeout = 0.3
    with pytest.raises(BackendError) as err:
        backend.deploy(TOPOLOGY)
    assert "waiting for the environment check pod nph-r1-shop/nph-environment-check to be Ready: gave up" in str(err.value)
    assert "nph-r1-shop/nph-environment-check: Pending" in str(err.value)
    assert ("nph-r1-shop", "nph-environment-check") not in cluster.pods  # removed on the way out
    shared._environment = ProbeEnvironment(sctp=False)  # as after a check that passed
    with pytest.raises(BackendError) as err:
        backend.deploy(TOPOLOGY)
    assert "waiting for 3 pod(s) to be Ready: gave up" in str(err.value)
    assert "nph-r1-shop/web: Pending" in str(err.value)
    backend.close()


def test_a_failed_deploy_leaves_reset_harmless_and_close_complete(cluster: InMemoryCluster) -> None:
    cluster.pod_waiting_reason = "CrashLoopBackOff"
    backend = backend_on(cluster)
    with pytest.raises(BackendError, match=r"pod nph-r1-[a-z-]+/[a-z-]+: CrashLoopBackOff: rpc error"):
        backend.deploy(TOPOLOGY)
    backend.reset()  # nothing was deployed: nothing to converge
    cluster.pod_waiting_reason = None
    backend.deploy(TOPOLOGY)  # the next scenario starts clean
    assert cluster.calls.count("delete namespace nph-r1-shop") == 1
    backend.close()
    assert cluster.calls.count("delete namespace nph-r1-shop") == 2


# -- teardown when the API server fails ---------------------------------------------------


@pytest.fixture
def broken_api(tmp_path: Path) -> Iterator[KubeClient]:
    """A real client whose API server resets every connection."""
    server = LoopbackApiServer()
    client = KubeClient(str(server.kubeconfig(tmp_path)))
    yield client
    client.close()
    server.close()


KUBECTL = "kubectl --kubeconfig /tmp/kubeconfig-of-the-double --context double"


def borrowed_kube_system(cluster: InMemoryCluster) -> None:
    cluster.namespaces["kube-system"] = {
        "metadata": {"name": "kube-system", "labels": {NAMESPACE_NAME_LABEL: "kube-system", "team": "core"}}
    }


def test_one_failed_deletion_does_not_stop_the_cleanup_and_is_tried_again(
    cluster: InMemoryCluster, broken_api: KubeClient
) -> None:
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


def test_labels_that_could_not_be_given_back_come_with_the_command_that_restores_them(
    cluster: InMemoryCluster, broken_api: KubeClient
) -> None:
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


def test_reproduce_command_for_an_endpoint_without_address_is_safe_to_paste(cluster: InMemoryCluster, tmp_path: Path) -> None:
    backend = backend_on(cluster)
    backend.deploy(Topology(namespaces=(NamespaceSpec("shop"),), pods=(PodSpec("shop", "web", {}, (HTTP,)),)))
    elsewhere = PodSpec("shop", "api", {}, (HTTP,))
    command = backend.reproduce_command(Probe(TOPOLOGY.pod("shop/web"), elsewhere, PortProtocol.parse("8080/TCP")))
    backend.close()
    assert shlex.split(command)[-1] == "http://<address of shop/api>:8080/"
    # Run by a real shell with kubectl replaced by a function that prints its arguments:
    # the placeholder is one argument, and no redirection creates or reads a file.
    shown = subprocess.run(
        ["sh", "-c", 'kubectl() { printf "%s\\n" "$@"; }; ' + command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert shown.stdout.splitlines()[-1] == "http://<address of shop/api>:8080/"
    assert list(tmp_path.iterdir()) == []


SCTP = PortSpec(9000, Protocol.SCTP)
SCTP_TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("x"),),
    pods=(PodSpec("x", "a", {"pod": "a"}, (PortSpec(80), SCTP)), PodSpec("x", "b", {"pod": "b"}, (PortSpec(80), SCTP))),
)


def test_sctp_cells_are_unsupported_on_a_kernel_without_sctp(cluster: InMemoryCluster) -> None:
    messages: list[str] = []
    backend = backend_on(cluster, messages=messages)
    backend.deploy(SCTP_TOPOLOGY)
    # porter would exit on an SCTP port it cannot listen on: the pods do not serve it.
    env = cluster.pods[("nph-r1-x", "a")]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["SERVE_TCP_PORT_80"]
    assert (
        "probe pods: curl, nc and agnhost present; no SCTP in the nodes' kernel: SCTP cells are reported as unsupported"
        in messages
    )
    sctp, tcp = probes(SCTP_TOPOLOGY, ("x/a", "x/b", "9000/SCTP"), ("x/a", "x/b", "80/TCP"))
    seen = backend.probe([sctp, tcp], timeout=1.0)
    assert seen[tcp].outcome is Outcome.ALLOWED
    assert seen[sctp].outcome is Outcome.UNSUPPORTED
    assert seen[sctp].detail.startswith("the nodes' kernel has no SCTP (no SCTP in /proc/net/protocols of a probe pod)")
    assert "modprobe sctp" in seen[sctp].detail
    assert seen[sctp].command.endswith(
        "-- /agnhost connect " + f"{backend._addresses['x/b']}:9000 --timeout=1000ms --protocol=sctp"
    )
    backend.close()


def test_a_kernel_with_sctp_is_recognised(cluster: InMemoryCluster, tmp_path: Path) -> None:
    # This machine's kernel has no SCTP: its /proc/net/protocols, with the two lines a
    # kernel with the sctp module adds (net/sctp: protocols named SCTP and SCTPv6; the
    # columns as net/core/sock.c prints them), stands in for one that has.
    protocols = tmp_path / "protocols"
    real = Path("/proc/net/protocols").read_text().splitlines()
    row = real[1].split(None, 1)[1]
    protocols.write_text("\n".join([real[0], f"SCTPv6    {row}", f"SCTP      {row}", *real[1:]]) + "\n")
    cluster.protocols_file = str(protocols)
    messages: list[str] = []
    backend = backend_on(cluster, messages=messages)
    backend.deploy(SCTP_TOPOLOGY)
    env = cluster.pods[("nph-r1-x", "a")]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["SERVE_SCTP_PORT_9000", "SERVE_TCP_PORT_80"]
    assert "probe pods: curl, nc and agnhost present; SCTP available" in messages
    backend.close()


def test_the_environment_check_runs_once_per_backend(cluster: InMemoryCluster) -> None:
    backend = backend_on(cluster)
    backend.deploy(SCTP_TOPOLOGY)
    backend.deploy(Topology(namespaces=(NamespaceSpec("y"),), pods=(PodSpec("y", "c", {}, (HTTP,)),)))
    assert [c for c in cluster.calls if c.endswith("nph-environment-check")] == [
        "create pod nph-r1-x/nph-environment-check",
        "exec nph-r1-x/nph-environment-check",
        "delete pod nph-r1-x/nph-environment-check",
    ]
    backend.close()


DNS_TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("shop"), NamespaceSpec("kube-system")),
    pods=(PodSpec("shop", "web", {"app": "web"}, (HTTP,)), PodSpec("kube-system", "coredns", {"k8s-app": "kube-dns"}, (DNS,))),
)


def test_a_scenarios_kube_system_is_a_namespace_of_its_own_on_kind(cluster: InMemoryCluster) -> None:
    # The real kube-system exists on every cluster; its kube-dns Service selects
    # k8s-app=kube-dns pods of that namespace.
    cluster.namespaces["kube-system"] = {"metadata": {"name": "kube-system", "labels": {NAMESPACE_NAME_LABEL: "kube-system"}}}
    backend = backend_on(cluster, adopt=True, reserved=("kube-system",))
    deployment = backend.deploy(DNS_TOPOLOGY)
    assert ("kube-system", "coredns") not in cluster.pods
    assert cluster.pods[("nph-kube-system", "coredns")]["metadata"]["labels"] == {"k8s-app": "kube-dns"}
    assert cluster.namespaces["kube-system"]["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "kube-system"}
    allow_dns = parse_policy({**POLICY.manifest, "metadata": {"name": "dns-only", "namespace": "shop"}})
    backend.apply_policies([allow_dns])
    applied = cluster.policies[("shop", "dns-only")]
    assert applied["spec"]["egress"][0]["to"][0]["namespaceSelector"] == {
        "matchLabels": {NAMESPACE_NAME_LABEL: "nph-kube-system"}
    }
    cell = probes(DNS_TOPOLOGY, ("shop/web", "kube-system/coredns", "5353/UDP"))[0]
    assert backend.probe([cell], timeout=1.0)[cell].outcome is Outcome.ALLOWED
    assert str(deployment.addresses["kube-system/coredns"]).startswith(cluster.subnet + ".")
    backend.close()
    assert "delete namespace nph-kube-system" in cluster.calls and "delete namespace kube-system" not in cluster.calls
