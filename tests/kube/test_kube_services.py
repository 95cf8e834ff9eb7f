"""Services on the cluster backends, with the API server replaced by the in-memory
double (tests/kube/cluster_double.py: Service objects, EndpointSlices computed as
the EndpointSlice controller does, a userspace proxy at each cluster IP). What is
real: the Service manifests, the wait for EndpointSlices, the probe script run with
curl and nc against real sockets through the proxy, the combination of the probes
of a Service cell. What is not: kube-proxy's DNAT and a CNI (the double has no
policies, and its proxy accepts a connection before it knows the backend refuses,
so a refusal through it is "connected, nothing answered"); how a Service's probes
combine into partial is tested on recorded probe-script lines instead
(tests/kube/recorded/probe-round.txt: real curl runs of the probe script).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cluster_double import InMemoryCluster  # the helper modules beside this file
from test_kube_cluster_backend import IMAGE, SharedClusterBackend

from harness.backends.cluster.services import ServiceTarget, combine, ready_endpoints
from harness.core.matrix import Cell, CellSet, Outcome
from harness.core.services import ServicePort, ServiceSpec
from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.kube.manifests import ANNOTATION_RUN, service_manifest
from harness.kube.naming import NamespaceMap
from harness.kube.probe_script import ProbeResult, parse_output
from harness.kube.views import endpoint_slice_view
from tests.drivers import StepDriver

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "nc")), reason="needs curl and nc (apt-get install curl netcat-openbsd)"
)

TCP, UDP = Protocol.TCP, Protocol.UDP
TOPOLOGY = Topology(
    namespaces=(NamespaceSpec("shop"),),
    pods=(
        PodSpec("shop", "web", {"app": "web"}, (PortSpec(8080),)),
        PodSpec("shop", "api", {"app": "api"}, (PortSpec(8000, TCP, "http"), PortSpec(5300, UDP))),
        PodSpec("shop", "api2", {"app": "api"}, (PortSpec(9000, TCP, "http"), PortSpec(5300, UDP))),
    ),
    services=(
        ServiceSpec("shop", "api", {"app": "api"}, (ServicePort(80, TCP, "http", "http"), ServicePort(53, UDP, 5300, "dns"))),
        # A numeric targetPort: every selected pod is an endpoint, whether it serves it or not.
        ServiceSpec("shop", "fixed", {"app": "api"}, (ServicePort(81, TCP, 8000),)),
    ),
)


def test_service_manifest_is_a_cluster_ip_service_with_the_scenarios_ports() -> None:
    manifest = service_manifest(TOPOLOGY.services[0], "nph-r1-shop", "r1")
    assert manifest["metadata"]["namespace"] == "nph-r1-shop"
    assert manifest["metadata"]["annotations"][ANNOTATION_RUN] == "r1"
    assert manifest["spec"] == {
        "type": "ClusterIP",
        "selector": {"app": "api"},
        "ports": [
            {"port": 80, "protocol": "TCP", "targetPort": "http", "name": "http"},
            {"port": 53, "protocol": "UDP", "targetPort": 5300, "name": "dns"},
        ],
    }
    assert "clusterIP" not in manifest["spec"]  # the API server allocates it


def test_ready_endpoints_read_the_discovery_v1_shape() -> None:
    """An EndpointSlice as the controller writes it; an endpoint with ready unset counts."""
    slices = [
        {
            "metadata": {"name": "api-abcde", "namespace": "shop"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": True}},
                {"addresses": ["10.244.2.7"], "conditions": {}},
                {"addresses": ["10.244.2.9"], "conditions": {"ready": False, "terminating": True}},
            ],
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}, {"name": "dns", "port": 5300, "protocol": "UDP"}],
        },
        {
            "metadata": {"name": "api-fghij", "namespace": "shop"},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::1"]}],
            "ports": [{"name": "http", "port": 8000}],
        },
    ]
    seen = ready_endpoints([endpoint_slice_view(piece) for piece in slices], TOPOLOGY.services[0])
    assert seen[PortProtocol(80, TCP)] == {("10.244.1.5", 8000), ("10.244.2.7", 8000)}
    assert seen[PortProtocol(53, UDP)] == {("10.244.1.5", 5300), ("10.244.2.7", 5300)}


@pytest.fixture
def cluster() -> Iterator[InMemoryCluster]:
    double = InMemoryCluster(ready_after=1)
    double.endpoints_after = 3
    yield double
    double.close()


def test_services_are_created_awaited_probed_and_removed(cluster: InMemoryCluster) -> None:
    messages: list[str] = []
    backend = StepDriver(
        SharedClusterBackend(cluster, NamespaceMap("r1"), IMAGE, messages.append, adopt_existing_namespaces=False, run_id="r1")
    )
    backend.deploy(TOPOLOGY)
    assert set(cluster.services) == {("nph-r1-shop", "api"), ("nph-r1-shop", "fixed")}
    assert any("waiting for the EndpointSlices of 2 Service(s)" in m for m in messages)
    ip = str(backend.services.cluster_ips["shop/svc:api"])
    assert ip.startswith(cluster.subnet + ".")
    cells = [
        Cell("shop/web", "shop/svc:api", PortProtocol(80, TCP)),
        Cell("shop/web", "shop/svc:api", PortProtocol(53, UDP)),
        Cell("shop/api", "shop/svc:api", PortProtocol(80, TCP)),
        Cell("shop/web", "api.shop", PortProtocol(80, TCP)),
    ]
    matrix = backend.backend.probe(CellSet.from_cells(cells), 1.0)
    through = matrix[cells[0]]
    assert through.outcome is Outcome.ALLOWED
    # The proxy takes turns (with the probes of other sources in between): both answer.
    assert re.fullmatch(r"answered by shop/api \([1-7] of 8\), shop/api2 \([1-7] of 8\)", through.detail), through.detail
    assert f"http://{ip}:80/" in through.command and "kubectl" in through.command
    assert matrix[cells[1]].outcome is Outcome.ALLOWED
    # From a backend: the other one (answers from itself do not count).
    assert matrix[cells[2]].outcome is Outcome.ALLOWED
    assert "shop/api2" in matrix[cells[2]].detail
    # On a shared cluster the scenario's DNS is not the cluster's: names are not probed.
    assert matrix[cells[3]].outcome is Outcome.UNSUPPORTED
    backend.close()
    assert cluster.services == {}


def test_services_follow_the_topology_on_a_reused_deployment(cluster: InMemoryCluster) -> None:
    backend = StepDriver(
        SharedClusterBackend(cluster, NamespaceMap("r2"), IMAGE, print, adopt_existing_namespaces=False, run_id="r2")
    )
    backend.deploy(TOPOLOGY)
    fewer = Topology(TOPOLOGY.namespaces, TOPOLOGY.pods, services=TOPOLOGY.services[:1])
    backend.deploy(fewer)
    assert set(cluster.services) == {("nph-r2-shop", "api")}
    assert "delete service nph-r2-shop/fixed" in cluster.calls
    backend.close()


#: Real results of the probe script (curl in a network namespace): by id, 0 was
#: answered by x/a, 2 timed out without a connection, 3 was answered by y/b.
RECORDED, _ = parse_output((Path(__file__).parent / "recorded" / "probe-round.txt").read_text())
ANSWERED_X_A, TIMED_OUT, ANSWERED_Y_B = RECORDED[0], RECORDED[2], RECORDED[3]
# curl's exit code when the resolver gives no address (curl's libcurl-errors: CURLE_COULDNT_RESOLVE_HOST).
NOT_RESOLVED = replace(TIMED_OUT, exit_code=6, stdout=b"", stderr=b"curl: (6) Could not resolve host: api.shop\n")


def answered_by(identity: str) -> ProbeResult:
    """The recorded answer of x/a, with another endpoint's identity in the reply."""
    return replace(ANSWERED_X_A, stdout=identity.encode())


@pytest.mark.parametrize(
    ("results", "outcome", "detail"),
    [
        ([ANSWERED_X_A, ANSWERED_Y_B], Outcome.ALLOWED, "answered by x/a (1 of 2), y/b (1 of 2)"),
        ([TIMED_OUT, TIMED_OUT], Outcome.BLOCKED, "2 probe(s)"),
        ([ANSWERED_X_A, TIMED_OUT], Outcome.PARTIAL, "1 allowed, 1 blocked; answered by x/a (1 of 2)"),
        ([answered_by("x/s"), ANSWERED_X_A], Outcome.ALLOWED, "answered by x/a (1 of 1)"),
        ([answered_by("x/zz")], Outcome.WRONG_RESPONDER, "answered by x/zz"),
        ([NOT_RESOLVED, NOT_RESOLVED], Outcome.NAME_NOT_RESOLVED, "2 probe(s)"),
        ([answered_by("x/s")], Outcome.ERROR, "every probe reached x/s itself"),
        ([None], Outcome.ERROR, "a probe printed no result"),
    ],
    ids=["all-answer", "all-time-out", "some", "self-ignored", "stranger", "no-name", "only-self", "missing"],
)
def test_the_probes_of_a_service_cell_combine(results: list[ProbeResult | None], outcome: Outcome, detail: str) -> None:
    target = ServiceTarget("10.96.1.10", 80, len(results), ("x/a", "y/b"))
    seen = combine(Cell("x/s", "x/svc:api", PortProtocol(80, TCP)), target, results, "cmd", 1.0)
    assert (seen.outcome, seen.detail) == (outcome, detail)
