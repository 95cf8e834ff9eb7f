"""The sealed network of one deployment: a node namespace and one namespace per
endpoint, wired like a Calico node.

Each endpoint namespace has ``eth0`` with its address as a /32 and a default route
via the link-local gateway ``169.254.1.1``; the other end of its veth sits in the
node namespace, which carries the gateway address on every veth (so it answers
the endpoints' ARP for it), one /32 route per endpoint, forwarding on, and the
nftables table that enforces policies. Its only other route is a default route
into :data:`~harness.backends.emulated.names.SINK`, a veth whose both ends are in
the node, through which the ruleset lets nothing pass: a packet to an address no
emulated host owns meets the source's egress policy in the forward hook like any
other, and then, leaving for the sink, is answered with "network unreachable" by
the ruleset (which logs it). Answering in the ruleset, not by a missing route,
keeps the answer free of the kernel's rate limit on routing errors (five at once,
then one a second per source, set only in the host's namespace:
``net.ipv4.route.error_burst`` and ``error_cost``), so every probe of such an
address is answered the same way. Nothing can leave. Every ``ip`` command runs
inside a namespace of this run (``ip -n``), so the host's own network namespace
is never touched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from harness.backends.emulated.leftovers import remove_namespaces
from harness.backends.emulated.names import NETNS_ETC, SINK, RunId, endpoint_netns_names, interface_names
from harness.backends.emulated.services import NSSWITCH, resolv_conf
from harness.backends.emulated.system import existing_netns, ip_batch, run, run_all
from harness.core.addressing import plan_addresses
from harness.core.errors import BackendError, BackendUnavailable, HarnessError
from harness.core.topology import POD_CIDR, ExternalHost, Topology

GATEWAY = ipaddress.IPv4Address("169.254.1.1")
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")

#: Node namespace settings: route between endpoints, and answer every packet to an
#: unowned address with an ICMP error (no rate limit, so each probe sees it).
_NODE_SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv4.icmp_msgs_per_sec=1000000",
    "net.ipv4.icmp_msgs_burst=1000000",
)


def allocate_addresses(topology: Topology) -> dict[str, ipaddress.IPv4Address]:
    """The addresses the harness plans for every backend that assigns its own
    (:func:`harness.core.addressing.plan_addresses`: the model backend computes with the
    same ones), after checking each external host can be emulated."""
    try:
        addresses = plan_addresses(topology)
    except HarnessError as err:
        raise BackendError(f"the emulated backend cannot address this topology: {err}") from None
    unaddressed = [pod.id for pod in topology.pods if pod.id not in addresses]
    if unaddressed:
        raise BackendError(f"pods {', '.join(unaddressed)} are in a namespace the topology does not declare")
    owners: dict[ipaddress.IPv4Address, str] = {}
    for ext in topology.externals:
        _check_external(ext)
        if ext.ip in owners:
            raise BackendError(f"external hosts {owners[ext.ip]} and {ext.name} both have address {ext.ip}")
        owners[ext.ip] = ext.name
    return addresses


def _check_external(ext: ExternalHost) -> None:
    ip = ext.ip
    if ip in POD_CIDR:
        raise BackendError(f"external host {ext.name}: {ip} is inside the pod range {POD_CIDR}; choose an address outside it")
    if ip in _LINK_LOCAL or ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        raise BackendError(
            f"external host {ext.name}: {ip} cannot be emulated (link-local, loopback, multicast or reserved); "
            "use a documentation range such as 203.0.113.0/24"
        )


class EmulatedNetwork:
    def __init__(self, run: RunId, topology: Topology) -> None:
        self.run = run
        self.topology = topology
        self.addresses = allocate_addresses(topology)
        #: endpoint id → its network namespace
        self.netns = endpoint_netns_names(run, topology)
        #: endpoint id → node-side veth
        self.interfaces = interface_names(self.netns)
        #: the namespaces this network created (all of them once build() succeeded)
        self.created: list[str] = []

    @property
    def all_netns(self) -> list[str]:
        return [self.run.node, *self.netns.values()]

    def build(self) -> None:
        before = set(existing_netns())
        taken = [name for name in self.all_netns if name in before]
        if taken:
            # Not ours: destroy() must leave them alone.
            raise BackendError(f"network namespaces {', '.join(taken)} already exist; remove them with `ip netns del`")
        try:
            ip_batch((f"netns add {name}" for name in self.all_netns), "creating network namespaces")
        except BackendError as err:
            raise BackendUnavailable(
                f"cannot create network namespaces ({err}); the emulated backend needs root with "
                "CAP_SYS_ADMIN and CAP_NET_ADMIN on a Linux kernel with network namespaces"
            ) from None
        finally:
            # `ip -batch` stops at the first failure: what exists now and did not
            # before is this network's, whatever happened.
            now = set(existing_netns())
            self.created = [name for name in self.all_netns if name in now and name not in before]
        node_lines = [
            "link set lo up",
            # Both ends in the node: nothing is ever sent through it (the ruleset
            # answers every packet routed there), so it leads nowhere.
            f"link add {SINK} type veth peer name {SINK}-end",
            f"link set {SINK}-end up",
            f"link set {SINK} up",
            f"route add default dev {SINK}",
        ]
        for endpoint_id, netns in self.netns.items():
            veth = self.interfaces[endpoint_id]
            # Created in the node namespace with the peer directly in the endpoint's:
            # neither end ever exists in the host namespace.
            node_lines += [
                f"link add {veth} type veth peer name eth0 netns {netns}",
                f"addr add {GATEWAY}/32 dev {veth}",
                f"link set {veth} up",
                f"route add {self.addresses[endpoint_id]}/32 dev {veth}",
            ]
        ip_batch(node_lines, "wiring the node namespace", netns=self.run.node)
        run(["sysctl", "-q", "-w", *_NODE_SYSCTLS], "configuring the node namespace", netns=self.run.node)
        # One `ip -batch` per endpoint namespace, several at once.
        run_all(
            {
                endpoint_id: (
                    ["ip", "-n", netns, "-batch", "-"],
                    "".join(
                        f"{line}\n"
                        for line in (
                            "link set lo up",
                            f"addr add {self.addresses[endpoint_id]}/32 dev eth0",
                            "link set eth0 up",
                            f"route add {GATEWAY} dev eth0 scope link",
                            f"route add default via {GATEWAY} dev eth0",
                        )
                    ),
                )
                for endpoint_id, netns in self.netns.items()
            },
            "configuring endpoint namespaces",
        )

    def write_resolver_files(self) -> None:
        """Each pod's /etc/netns/<its namespace>/resolv.conf (and nsswitch.conf),
        which ``ip netns exec`` mounts over /etc for the probes by name: the
        cluster DNS, with the pod's namespace first in the search list."""
        for pod in self.topology.pods:
            directory = NETNS_ETC / self.netns[pod.id]
            try:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / "resolv.conf").write_text(resolv_conf(pod.namespace))
                (directory / "nsswitch.conf").write_text(NSSWITCH)
            except OSError as err:
                raise BackendError(f"cannot write the resolver files of {pod.id} in {directory}: {err.strerror or err}") from None

    def load_endpoint_rulesets(self, rulesets: Mapping[str, str]) -> None:
        """Load a ruleset into each of these endpoints' own namespaces, several at once."""
        run_all(
            {endpoint_id: (["nft", "-f", "-"], ruleset) for endpoint_id, ruleset in rulesets.items()},
            "loading nftables rulesets into pod namespaces",
            netns={endpoint_id: self.netns[endpoint_id] for endpoint_id in rulesets},
        )

    def destroy(self) -> list[str]:
        """Remove the namespaces this network created (their veths and processes go
        with them). Returns the names that could not be removed."""
        remaining = remove_namespaces(self.created)
        self.created = remaining
        return remaining
