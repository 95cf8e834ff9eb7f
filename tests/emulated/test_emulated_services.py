"""Services and the cluster DNS on the emulated backend, for real: DNAT in the node
namespace before the policies, each backend probed through the Service from its own
source ports, the DNS pod's server answering the Services' names through each pod's
resolv.conf (mounted by ``ip netns exec``), name probes that fail as "name not
resolved" when a policy drops the DNS query, and the differential test's random
policies judged on Service and name cells against the reference model.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest

from harness.backends.base import Deployment, Options
from harness.backends.emulated import missing_requirements
from harness.backends.emulated.names import NETNS_ETC
from harness.core.matrix import Cell, CellSet, Observation, Outcome
from harness.core.plan import probe_grid
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.services import ServicePort, ServiceSpec
from harness.core.settings import ImplementationSettings
from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.model import ReferenceModel
from tests.drivers import StepDriver
from tests.emulated.test_differential import SEED, TOPOLOGY, generate_cases

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

TCP, UDP = Protocol.TCP, Protocol.UDP
P80, P8000 = PortProtocol(80, TCP), PortProtocol(8000, TCP)

SHOP = Topology(
    namespaces=(NamespaceSpec("web"), NamespaceSpec("api"), NamespaceSpec("kube-system")),
    pods=(
        PodSpec("web", "client", {"app": "client"}, (PortSpec(8080),)),
        PodSpec("api", "stable", {"app": "api", "track": "stable"}, (PortSpec(8000, TCP, "http"), PortSpec(5300, UDP))),
        PodSpec("api", "canary", {"app": "api", "track": "canary"}, (PortSpec(9000, TCP, "http"), PortSpec(5300, UDP))),
        PodSpec("kube-system", "coredns", {"k8s-app": "kube-dns"}, (PortSpec(53, UDP), PortSpec(53, TCP))),
    ),
    services=(
        ServiceSpec("api", "api", {"app": "api"}, (ServicePort(80, TCP, "http", "http"), ServicePort(53, UDP, 5300, "dns"))),
        ServiceSpec("api", "nobody", {"app": "nobody"}, (ServicePort(81),)),
    ),
)


def policy(name: str, namespace: str, spec: dict[str, object]) -> NetworkPolicy:
    return parse_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


CANARY_CLOSED = policy("canary-closed", "api", {"podSelector": {"matchLabels": {"track": "canary"}}, "policyTypes": ["Ingress"]})
#: Ingress to the stable pod on its target port only: admits the Service's port 80,
#: which the policy never sees (it sees 8000 after the DNAT).
STABLE_ON_8000 = policy(
    "stable-on-8000",
    "api",
    {"podSelector": {"matchLabels": {"track": "stable"}}, "ingress": [{"ports": [{"port": 8000}]}]},
)
CLIENT_NO_EGRESS = policy("client-no-egress", "web", {"podSelector": {}, "policyTypes": ["Egress"]})
CLIENT_TO_API = policy(
    "client-to-api",
    "web",
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "api"}}}]}],
    },
)
CLIENT_DNS = policy(
    "client-dns",
    "web",
    {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"port": 53, "protocol": "UDP"}],
            }
        ],
    },
)


@pytest.fixture(scope="module")
def shop() -> Iterator[tuple[StepDriver, Deployment]]:
    from harness.backends import emulated

    backend = StepDriver(emulated.create(Options()))
    try:
        yield backend, backend.deploy(SHOP)
    finally:
        backend.close()


def probe(backend: StepDriver, *cells: tuple[str, str, PortProtocol]) -> dict[Cell, Observation]:
    wanted = [Cell(*c) for c in cells]
    matrix = backend.backend.probe(CellSet.from_cells(wanted), 1.0)
    return {cell: matrix[cell] for cell in wanted}


def test_policies_see_the_backend_and_its_target_port_after_the_dnat(shop: tuple[StepDriver, Deployment]) -> None:
    backend, _ = shop
    backend.reset()
    backend.apply_policies([CANARY_CLOSED, STABLE_ON_8000])
    seen = probe(backend, ("web/client", "api/svc:api", P80), ("web/client", "api/stable", P8000))
    through = seen[Cell("web/client", "api/svc:api", P80)]
    # Admitted by the rule on 8000 though the probe went to port 80 of the cluster IP;
    # the canary, the other backend, dropped it: partial, with both pods named.
    assert through.outcome is Outcome.PARTIAL
    assert through.detail.startswith("allowed by api/stable; blocked by api/canary (via api/stable: allowed (")
    assert "ingress of api/stable admitted by api/stable-on-8000 ingress[0]" in through.detail
    assert "via api/canary: blocked (dropped: ingress of api/canary isolated by api/canary-closed" in through.detail
    assert seen[Cell("web/client", "api/stable", P8000)].outcome is Outcome.ALLOWED


def test_each_backend_is_probed_deterministically_and_by_hand(shop: tuple[StepDriver, Deployment]) -> None:
    backend, _ = shop
    backend.reset()
    backend.apply_policies([CANARY_CLOSED])
    cell = ("web/client", "api/svc:api", P80)
    outcomes = [probe(backend, cell)[Cell(*cell)] for _ in range(3)]
    assert {o.outcome for o in outcomes} == {Outcome.PARTIAL}
    assert len({o.detail.split(" (")[0] for o in outcomes}) == 1
    # The reproduce commands, pasted: the stable pod answers through the cluster IP.
    stable_command = outcomes[0].command.split("; ")[0]
    assert "--local-port 61" in stable_command
    done = subprocess.run(stable_command, shell=True, capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() == "api/stable", done.stderr


def test_a_service_without_endpoints_refuses(shop: tuple[StepDriver, Deployment]) -> None:
    backend, _ = shop
    backend.reset()
    seen = probe(backend, ("web/client", "api/svc:nobody", PortProtocol(81, TCP)))
    assert seen[Cell("web/client", "api/svc:nobody", PortProtocol(81, TCP))].outcome is Outcome.REFUSED


def test_names_fail_when_dns_egress_is_blocked_and_resolve_once_it_is_allowed(shop: tuple[StepDriver, Deployment]) -> None:
    backend, _ = shop
    backend.reset()
    netns = backend.network.netns["web/client"]
    resolv = (NETNS_ETC / netns / "resolv.conf").read_text()
    assert resolv.startswith("nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local\n")
    backend.apply_policies([CLIENT_NO_EGRESS, CLIENT_TO_API])
    cells = [("web/client", "api.api", P80), ("web/client", "api/svc:api", P80), ("web/client", "api.api", PortProtocol(53, UDP))]
    seen = probe(backend, *cells)
    by_name = seen[Cell(*cells[0])]
    assert by_name.outcome is Outcome.NAME_NOT_RESOLVED
    assert "the DNS query was dropped: egress of web/client isolated by web/client-no-egress, web/client-to-api" in by_name.detail
    assert by_name.elapsed < 0.9  # ended when the kernel logged the drop, not by the resolver's timeout
    assert seen[Cell(*cells[1])].outcome is Outcome.ALLOWED
    assert seen[Cell(*cells[2])].outcome is Outcome.NAME_NOT_RESOLVED  # nc resolves too
    backend.apply_policies([CLIENT_DNS])
    seen = probe(backend, *cells)
    assert [seen[Cell(*c)].outcome for c in cells] == [Outcome.ALLOWED] * 3
    assert "http://api.api:80/" in seen[Cell(*cells[0])].command
    # By hand, as the reproduce command says: ip netns exec mounts the pod's resolv.conf.
    done = subprocess.run(seen[Cell(*cells[0])].command.split("; ")[0], shell=True, capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() in ("api/stable", "api/canary"), done.stderr


def test_a_relabelled_backend_gets_the_next_udp_probe(shop: tuple[StepDriver, Deployment]) -> None:
    """The NAT binding of a UDP probe would outlive the ruleset: flushed at each load."""
    backend, _ = shop
    backend.reset()
    cell = Cell("web/client", "api/svc:api", PortProtocol(53, UDP))
    assert probe(backend, (cell.source, cell.destination, cell.port))[cell].outcome is Outcome.ALLOWED
    backend.set_pod_labels("api/canary", {"app": "api", "track": "stable"})
    backend.set_pod_labels("api/stable", {"app": "legacy"})
    seen = probe(backend, (cell.source, cell.destination, cell.port))[cell]
    assert seen.outcome is Outcome.ALLOWED and seen.command.count("nc -u") == 1, seen


def test_resolver_files_are_removed_with_the_network() -> None:
    from harness.backends import emulated

    backend = StepDriver(emulated.create(Options()))
    backend.deploy(SHOP)
    directory = NETNS_ETC / backend.network.netns["web/client"]
    assert (directory / "resolv.conf").is_file()
    backend.close()
    assert not directory.exists()


# -- against the model, on the differential test's random policies ---------------------

#: The differential topology with Services over it (three backends of one Service,
#: named target ports that differ per pod, UDP) and a cluster DNS pod.
SERVICES = replace(
    TOPOLOGY,
    namespaces=(*TOPOLOGY.namespaces, NamespaceSpec("kube-system")),
    pods=(
        *(replace(p, labels={**p.labels, "app": "shop"}) if p.namespace == "x" else p for p in TOPOLOGY.pods),
        PodSpec("kube-system", "coredns", {"k8s-app": "kube-dns"}, (PortSpec(53, UDP),)),
    ),
    services=(
        ServiceSpec("x", "shop", {"app": "shop"}, (ServicePort(8080, TCP, 80, "web"), ServicePort(5353, UDP, 80, "udp"))),
        ServiceSpec("x", "http", {"app": "shop"}, (ServicePort(8081, TCP, "http"),)),
        ServiceSpec("y", "db", {"role": "db"}, (ServicePort(90, TCP, 81, "db"), ServicePort(91, UDP, "dns", "dns"))),
    ),
)


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[StepDriver, Deployment]]:
    from harness.backends import emulated

    backend = StepDriver(emulated.create(Options()))
    try:
        yield backend, backend.deploy(SERVICES)
    finally:
        backend.close()


@pytest.mark.parametrize("case", generate_cases(8, SEED + 1), ids=lambda case: f"case{case.number}")
def test_service_and_name_cells_agree_with_the_model(services: tuple[StepDriver, Deployment], case: object) -> None:
    backend, deployment = services
    backend.reset()
    settings: ImplementationSettings = case.settings  # type: ignore[attr-defined]
    backend.use_settings(settings)
    policies = case.policies  # type: ignore[attr-defined]
    backend.apply_policies(policies)
    for relabel in case.relabels:  # type: ignore[attr-defined]
        relabel.apply(backend)
    topology = backend.topology
    ports = sorted({p.key for s in topology.services for p in s.ports})
    grid = probe_grid(topology, ports, names=True)
    columns = [d for d in grid.axes.destinations if topology.service_destination(d) is not None]
    cells = CellSet.of([c for c in grid if c.destination in columns], grid.axes)
    model = ReferenceModel(topology, policies, deployment.addresses, settings).reachability(cells)
    observed = backend.backend.probe(cells, 1.0)
    wrong = [
        f"  {cell}: model {model[cell].describe()}, observed {observed[cell].describe()}\n    {observed[cell].command}"
        for cell in cells
        if observed[cell].outcome is not model[cell].outcome
    ]
    assert not wrong, "\n".join(wrong) + "\npolicies:\n" + case.yaml()  # type: ignore[attr-defined]
