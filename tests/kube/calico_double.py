"""The in-memory API server (cluster_double.py) with a stand-in for Calico: what a
kind cluster with one pinned Calico release stores and enforces, for the tests of
the kinds beyond NetworkPolicy. No cluster can run here.

Recorded, from the upstream sources:

- the CustomResourceDefinitions each release installs (tests/kube/recorded/crds/,
  the documents of the release's manifests), and with them what the API server
  accepts: every custom object is defaulted and checked against its CRD's schema
  with strict field validation (crd_schema.py); Calico's ``projectcalico.org/v3``
  kinds, which the Calico API server validates itself on a v1-CRD cluster, are
  checked against the schemas of Calico's own v3 CRDs (release-v3.33), which are
  generated from the same API types (api/pkg/apis/projectcalico/v3);
- which ``projectcalico.org/v3`` resources the Calico API server serves
  (apiserver/pkg/registry/projectcalico/rest/storage_calico.go, v3.31.7);
- which admin-policy kinds each minor version converts into Felix's policies
  (v3.31.7: libcalico-go/lib/backend/k8s/resources/kubeadminnetworkpolicy.go and
  kubebaselineadminnetworkpolicy.go; from v3.32: kubeclusternetworkpolicy.go, the
  v1alpha1 ones gone), kept here apart from the harness's recipes on purpose;
- v3.32.0's API server answering NotFound to a server-side apply that would create
  a tiered policy (projectcalico/calico#12841: ``globalnetworkpolicies.projectcalico.org
  "gnptest" not found``).

What stands in for Felix: which connections are dropped is decided by the harness's
reference model over what is stored on this "cluster", under the real namespace
names and labels, for the kinds the running version converts (staged policies
never: felix/rules/endpoints.go skips them). A dropped TCP connection goes to a
black hole and times out, as behind Calico's default DROP; a dropped UDP datagram
to a socket that never answers; with the deny action REJECT, both go to an address
where nothing listens and are refused at once, as behind an ICMP port unreachable.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_double import BlackHole, InMemoryCluster
from crd_schema import RecordedCrd, recorded

from harness.backends.base import BackendInfo
from harness.backends.cluster.backend import ClusterBackend
from harness.backends.cluster.enforcement import PolicySupport, calico_support
from harness.backends.kind.backend import SYSTEM_NAMESPACES
from harness.core.calico.policy import CalicoPolicy, parse_staged_policy
from harness.core.cluster_policy import ClusterPolicy, parse_cluster_policy
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.progress import Progress
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState, calico_ref
from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.kube.api import ExecRequest, ExecResult
from harness.kube.calico import load_recipes, resolve_release
from harness.kube.errors import KubeApiError
from harness.kube.naming import NamespaceMap
from harness.kube.probe_script import SCRIPT_NAME
from harness.kube.resources import CALICO_GROUP, CALICO_VERSION, ApiResource
from harness.kube.versions import load_versions
from harness.model import ReferenceModel

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
#: The admin-policy kinds each minor version converts (see the module docstring).
CONVERTED = {
    "3.31": frozenset({"AdminNetworkPolicy", "BaselineAdminNetworkPolicy"}),
    "3.32": frozenset({"ClusterNetworkPolicy"}),
    "3.33": frozenset({"ClusterNetworkPolicy"}),
}
#: The recorded CRDs of the network-policy-api each minor version installs
#: (release-v3.33's clusternetworkpolicies document is release-v3.32's, byte for byte).
ADMIN_CRDS = {"3.31": "calico-v3.31.7", "3.32": "calico-release-v3.32", "3.33": "calico-release-v3.32"}
#: Calico's own kinds as CRDs, for their schemas (and, in v3 CRD mode, to serve them).
V3_CRDS = "calico-release-v3.33-v3"
#: The resources Calico's aggregated API server registers (storage_calico.go, v3.31.7).
API_SERVER_RESOURCES = frozenset(
    {
        "tiers",
        "networkpolicies",
        "stagednetworkpolicies",
        "stagedkubernetesnetworkpolicies",
        "globalnetworkpolicies",
        "stagedglobalnetworkpolicies",
        "globalnetworksets",
        "networksets",
        "hostendpoints",
        "ippools",
        "ipreservations",
        "bgpconfigurations",
        "bgppeers",
        "bgpfilters",
        "profiles",
        "felixconfigurations",
        "clusterinformations",
        "caliconodestatuses",
        "ipamconfigurations",
        "blockaffinities",
        "kubecontrollersconfigurations",
    }
)
#: The tiered kinds whose server-side apply v3.32.0 cannot create (calico#12841, #12906).
TIERED = frozenset({"networkpolicies", "globalnetworkpolicies", "stagednetworkpolicies", "stagedglobalnetworkpolicies"})


def minor_of(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    return f"{major}.{minor}"


class SilentUdp:
    """A UDP socket that reads every datagram and answers none: a dropped datagram."""

    def __init__(self, address: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while not self.stop.is_set():
            try:
                self.sock.recvfrom(1024)
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@dataclass(frozen=True)
class Connection:
    """One probe of a round, as the CNI sees it."""

    source: str  # pod id on the cluster
    destination: str  # pod id on the cluster
    port: PortProtocol


class CalicoCluster(InMemoryCluster):
    """A cluster running Calico ``version``, its Calico resources in ``crd_mode``
    (``v1``: served by the Calico API server; ``v3``: Calico's own v3 CRDs)."""

    def __init__(self, version: str = "v3.32.4", crd_mode: str = "v1", ready_after: int = 1) -> None:
        super().__init__(ready_after=ready_after)
        self.version = version
        self.crd_mode = crd_mode
        self.schemas: dict[tuple[str, str], RecordedCrd] = {crd_key(c): c for c in recorded(V3_CRDS).values()}
        self.install(version)
        #: ``Reject``: denied connections are refused at once instead of dropped.
        self.deny_action = "Drop"
        self.hole_address = f"{self.subnet}.250"
        self.reject_address = f"{self.subnet}.251"
        self.holes: dict[tuple[int, str], BlackHole | SilentUdp] = {}
        #: Per probe round: every connection and whether the CNI dropped it.
        self.rounds: list[list[tuple[Connection, bool]]] = []
        self._foreign: list[tuple[str, str]] = []

    # -- what is installed
    def install(self, version: str) -> None:
        """Calico ``version``'s CRDs and APIs; those of an earlier version stay, as
        after an upgrade."""
        self.version = version
        minor = minor_of(version)
        for crd in recorded(ADMIN_CRDS[minor]).values():
            self.crds.add(crd.name)
            self.schemas[crd_key(crd)] = crd
        if self.crd_mode == "v3":
            self.crds |= {crd.name for crd in recorded(V3_CRDS).values()}
        else:
            self.served[(CALICO_GROUP, CALICO_VERSION)] = set(API_SERVER_RESOURCES)

    def upgrade(self, version: str) -> None:
        self.install(version)

    def add_foreign_pod(self, namespace: str, name: str, labels: Mapping[str, str], port: int) -> None:
        """A pod that is not the harness's (kube-system's CoreDNS, another tenant's),
        in a namespace the harness did not create."""
        if namespace not in self.namespaces:
            self.namespaces[namespace] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
            }
        self.create_pod(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "agnhost",
                            "ports": [{"containerPort": port, "protocol": "TCP"}],
                            "env": [{"name": f"SERVE_TCP_PORT_{port}", "value": f"{namespace}/{name}"}],
                        }
                    ]
                },
            }
        )
        self.pods[(namespace, name)]["status"].update(phase="Running", conditions=[{"type": "Ready", "status": "True"}])
        self._foreign.append((namespace, name))

    # -- what the API server accepts
    def admit(self, what: str, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        crd = self.schemas.get((resource.group, resource.kind))
        if crd is None:
            return
        problems = crd.problems(manifest, resource.version)
        if problems:
            name = manifest["metadata"]["name"]
            raise KubeApiError(
                what,
                f'the API server at {self.server} answered 422: {resource.kind}.{resource.group} "{name}" is invalid: '
                + "; ".join(problems),
                status=422,
                reason="Unprocessable Entity",
            )

    def apply_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        key = (resource.group, resource.plural, meta.get("namespace") if resource.namespaced else None, meta["name"])
        if (
            self.version == "v3.32.0"
            and self.crd_mode == "v1"
            and resource.group == CALICO_GROUP
            and resource.plural in TIERED
            and key not in self.objects
        ):
            raise KubeApiError(
                f"apply {resource.describe(meta.get('namespace'), meta['name'])}",
                f'the API server at {self.server} answered 404: {resource.plural}.{resource.group} "{meta["name"]}" not found',
                status=404,
                reason="Not Found",
            )
        super().apply_object(resource, manifest)

    # -- what Felix enforces
    def stored(self, group: str, plural: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(m)
            for (g, p, _, _), m in sorted(self.objects.items(), key=lambda i: str(i[0]))
            if (g, p) == (group, plural)
        ]

    def state(self) -> DesiredState:
        """Everything in force on the cluster, under its real names, as a desired
        state of the reference model: what this Calico converts of it."""
        namespaces = tuple(
            NamespaceSpec(name, dict(ns["metadata"].get("labels") or {})) for name, ns in sorted(self.namespaces.items())
        )
        pods = []
        for (namespace, name), pod in sorted(self.pods.items()):
            container = pod["spec"]["containers"][0]
            ports = tuple(
                PortSpec(int(p["containerPort"]), Protocol(p.get("protocol", "TCP")), p.get("name"))
                for p in container.get("ports", [])
            )
            pods.append(PodSpec(namespace, name, dict(pod["metadata"].get("labels") or {}), ports))
        policies: dict[str, NetworkPolicy] = {
            f"{ns}/{name}": parse_policy(m, "cluster") for (ns, name), m in sorted(self.policies.items())
        }
        converted = CONVERTED[minor_of(self.version)]
        cluster: dict[str, ClusterPolicy] = {}
        for plural in ("clusternetworkpolicies", "adminnetworkpolicies", "baselineadminnetworkpolicies"):
            for manifest in self.stored("policy.networking.k8s.io", plural):
                if manifest["kind"] in converted:
                    parsed = parse_cluster_policy(manifest, "cluster")
                    cluster[parsed.ref] = parsed
        calico: dict[str, CalicoPolicy] = {}
        for plural, staged_kind in (
            ("networkpolicies", "StagedNetworkPolicy"),
            ("globalnetworkpolicies", "StagedGlobalNetworkPolicy"),
        ):
            for manifest in self.stored(CALICO_GROUP, plural):
                # The enforced kinds have the staged kinds' spec: read through the harness's parser of those.
                enforced = parse_staged_policy({**manifest, "kind": staged_kind}, "cluster").enforced
                assert isinstance(enforced, CalicoPolicy)
                calico[calico_ref(enforced.key)] = enforced
        return DesiredState(Topology(namespaces, tuple(pods)), policies, cluster, calico)

    def model(self) -> ReferenceModel:
        state = self.state()
        addresses = {f"{ns}/{name}": ipaddress.IPv4Address(pod["status"]["podIP"]) for (ns, name), pod in self.pods.items()}
        return ReferenceModel(
            state.topology, state.effective_policies, addresses, ImplementationSettings(), state.cluster_policy_list
        )

    def allows(self, source: str, destination: str, port: str) -> bool:
        """Whether this Calico admits ``source`` → ``destination`` on ``port`` now."""
        return self.model().allowed(source, destination, PortProtocol.parse(port))

    def exec_many(self, requests: Sequence[ExecRequest], workers: int) -> list[ExecResult]:
        model = self.model()
        self.rounds.append([])
        return super().exec_many([self._through_policies(r, model) for r in requests], workers)

    def _through_policies(self, request: ExecRequest, model: ReferenceModel) -> ExecRequest:
        """The probe script's request with each probe of a denied connection sent where
        a denied packet goes (same port, so the clients' command lines stay valid)."""
        args = list(request.command)
        if len(args) < 5 or args[3] != SCRIPT_NAME:
            return request
        by_address = {str(p["status"]["podIP"]): f"{ns}/{name}" for (ns, name), p in self.pods.items()}
        source = f"{request.namespace}/{request.pod}"
        i = 5
        while i < len(args):
            count = int(args[i + 2])
            argv = args[i + 3 : i + 3 + count]
            target = _target(argv)
            if target is not None and target[0] in by_address:
                address, port, protocol = target
                connection = Connection(source, by_address[address], PortProtocol(port, protocol))
                dropped = not model.allowed(connection.source, connection.destination, connection.port)
                self.rounds[-1].append((connection, dropped))
                if dropped:
                    args[i + 3 : i + 3 + count] = [w.replace(address, self._denied_address(port, protocol)) for w in argv]
            i += 3 + count
        return ExecRequest(request.namespace, request.pod, request.container, tuple(args), request.timeout)

    def _denied_address(self, port: int, protocol: Protocol) -> str:
        if self.deny_action == "Reject":
            return self.reject_address  # nothing listens: refused at once
        if (port, protocol.value) not in self.holes:
            hole: BlackHole | SilentUdp = (
                BlackHole(self.hole_address, port) if protocol is Protocol.TCP else SilentUdp(self.hole_address, port)
            )
            self.holes[(port, protocol.value)] = hole
        return self.hole_address

    def close(self) -> None:
        for hole in self.holes.values():
            hole.close()
        super().close()


def crd_key(crd: RecordedCrd) -> tuple[str, str]:
    return (crd.group, crd.kind)


def _target(argv: Sequence[str]) -> tuple[str, int, Protocol] | None:
    """Address, port and protocol of one client command line (curl or nc)."""
    for word in argv:
        if word.startswith("http://"):
            host, _, port = word[len("http://") :].rstrip("/").rpartition(":")
            return host, int(port), Protocol.TCP
    if argv and argv[0].endswith("nc") and len(argv) >= 2 and argv[-1].isdigit():
        return argv[-2], int(argv[-1]), Protocol.UDP
    return None


class OnCalico(ClusterBackend):
    """The cluster backend on a :class:`CalicoCluster`, judged as the kind backend is:
    what the running release enforces is its minor version's recipe
    (clusters/calico/<minor>/recipe.yaml, read by the real code)."""

    name = "kind"
    poll = 0.01

    def __init__(
        self, cluster: CalicoCluster, *, run_id: str = "r1", shared: bool = False, progress: Progress | None = None
    ) -> None:
        names = NamespaceMap(run_id) if shared else NamespaceMap(reserved=SYSTEM_NAMESPACES)
        super().__init__(cluster, names, IMAGE, progress or (lambda _: None), adopt_existing_namespaces=not shared, run_id=run_id)
        self.cluster = cluster
        self.recipes = load_recipes(CLUSTERS)

    def policy_support(self) -> PolicySupport:
        version = self.cluster.version
        return calico_support(version, self.recipes[minor_of(version)])

    def upgrade_calico(self, to_version: str) -> None:
        """What KindBackend.upgrade_calico does once the operator reports the new
        release: the new release's CRDs on the cluster, and the kinds judged again."""
        release = resolve_release(to_version, load_versions(CLUSTERS), self.recipes)
        self.cluster.upgrade(release.version)
        if self._support is not None:
            self._support.forget(self.policy_support())

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, "calico", self.cluster.version, "v1.36.4")

    def close(self) -> None:
        self.close_namespaces()


class SharedOnCalico(OnCalico):
    """The same on a shared cluster: the ``existing`` backend's naming."""

    name = "existing"

    def __init__(self, cluster: CalicoCluster, *, run_id: str = "r1", progress: Progress | None = None) -> None:
        super().__init__(cluster, run_id=run_id, shared=True, progress=progress)
