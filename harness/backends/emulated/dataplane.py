"""The running side of one deployment: the rules in force, the kernel's log of what
they do, the checks of the network, and the probe rounds.

The backend hands it a ruleset to load (:meth:`Dataplane.load`) and cells to probe
(:meth:`Dataplane.probe`); it numbers the rulesets (the generation in every log
prefix), listens to the NFLOG group in the node namespace and in the pod
namespaces that hold self-traffic tables, verifies the network before each round
(:mod:`harness.backends.emulated.integrity`) and runs the round
(:mod:`harness.backends.emulated.rounds`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from harness.backends.emulated.integrity import echo_problems, link_problems, list_table, listing_problems, server_problems
from harness.backends.emulated.netlink import NamespaceNetlink
from harness.backends.emulated.network import EmulatedNetwork
from harness.backends.emulated.nflog import LogSubscription
from harness.backends.emulated.nftlib import NftContext
from harness.backends.emulated.rounds import ProbeRequest, ProbeResult, RoundSetup, run_round
from harness.backends.emulated.ruleset import LOG_GROUP, LogIndex, RulesetInput, compile_ruleset, remove_table
from harness.backends.emulated.servers import EndpointServers
from harness.core.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)


class NetworkBroken(BackendError):
    """The emulated network is not the one the harness built: no verdict is made on it."""


class Dataplane:
    def __init__(self, network: EmulatedNetwork, servers: EndpointServers, workers: int) -> None:
        self.network = network
        self.servers = servers
        self.workers = workers
        self.generation = 0
        self.index = LogIndex()
        self.ruleset = ""  # the node's script last loaded
        #: The nftables generation of each namespace holding a table of this run,
        #: right after the last load was checked, and the script loaded there:
        #: what must still be in force.
        self._generations: dict[str, tuple[int, str]] = {}
        self._self_tables: set[str] = set()  # pod ids whose namespace holds a table
        self._self_policy = False
        #: Why the network cannot be trusted any more (None while it can).
        self.broken: str | None = None
        self._logs: dict[str, LogSubscription] = {}
        #: Netlink sockets of the namespaces whose tables are checked.
        self._kernel: dict[str, NamespaceNetlink] = {}
        #: The node's rulesets are loaded in this process (harness.backends.emulated.nftlib).
        self._nft: NftContext | None = None
        try:
            self._subscribe(network.run.node)
            self._nft = NftContext(network.run.node)
        except BaseException:
            self.close()
            raise

    def _subscribe(self, netns: str) -> None:
        if netns not in self._kernel:
            self._kernel[netns] = NamespaceNetlink(netns)
        if netns not in self._logs:
            self._logs[netns] = LogSubscription(netns, LOG_GROUP)

    def _unsubscribe(self, netns: str) -> None:
        subscription = self._logs.pop(netns, None)
        if subscription is not None:
            subscription.close()
        kernel = self._kernel.pop(netns, None)
        if kernel is not None:
            kernel.close()

    def _generation(self, netns: str) -> int:
        return self._kernel[netns].nftables_generation()

    # -- rules -------------------------------------------------------------------------

    def load(self, data: RulesetInput, self_policy: bool) -> str:
        """Compile and load the ruleset of ``data`` (with self-traffic tables in the
        pod namespaces when ``self_policy``), then check that what the kernel holds
        is what was loaded. Returns the node's script."""
        first_load = self.generation == 0
        self.generation += 1
        compiled = compile_ruleset(
            dataclasses.replace(data, generation=self.generation, first_load=first_load), self_tables=self_policy
        )
        network = self.network
        node = network.run.node
        before = self._generation(node)
        echo = self._load_node(compiled.text)
        after = self._generation(node)
        problems = echo_problems(network.run.table, "the node namespace", compiled.text, echo)
        if after != (before + 1) & 0xFFFFFFFF and not problems:
            # Another transaction came between: what is in force is what a listing says.
            problems = listing_problems(
                network.run.table, "the node namespace", compiled.text, list_table(node, network.run.table)
            )
        if problems:
            self._break(problems)
        tables: dict[str, str] = {}
        if self_policy:
            tables = dict(compiled.self_tables)
        elif self._self_tables:
            tables = {pod: remove_table(network.run.table) for pod in self._self_tables}
        if tables:
            network.load_endpoint_rulesets(tables)
        self.index = compiled.index
        self.ruleset = compiled.text
        self._self_policy = self_policy
        # Pods whose namespace now holds a table (a pod that is not isolated gets
        # none): their drops are logged there, so listen there too.
        self._self_tables = {pod for pod, script in tables.items() if self_policy and "chain " in script}
        listening = {network.run.node} | {network.netns[pod] for pod in self._self_tables}
        for netns in set(self._logs) - listening:
            self._unsubscribe(netns)
        for netns in listening:
            self._subscribe(netns)
        self._generations = {node: (after, compiled.text)}
        self._check_pod_tables({pod: tables[pod] for pod in self._self_tables})
        return compiled.text

    def _load_node(self, script: str) -> str:
        """Replace the node's table in one transaction; what the kernel created."""
        if self._nft is None:
            raise BackendError("the emulated network's nftables context is closed")
        try:
            return self._nft.run(script, "loading the nftables ruleset")
        except BackendError as err:
            if "Operation not supported" in str(err) or "Protocol not supported" in str(err):
                raise BackendUnavailable(f"{err}. The kernel lacks nf_tables support (modprobe nf_tables nft_ct)") from None
            raise

    def _check_pod_tables(self, pod_scripts: dict[str, str]) -> None:
        """Check the tables just loaded into pod namespaces against their scripts
        (by listing them: they were loaded several at once) and record each
        namespace's generation."""
        network = self.network
        problems: list[str] = []
        for pod, script in pod_scripts.items():
            netns = network.netns[pod]
            listing = list_table(netns, network.run.table)
            problems += listing_problems(network.run.table, f"the namespace of {pod}", script, listing)
            self._generations[netns] = (self._generation(netns), script)
        if problems:
            self._break(problems)

    # -- checks ------------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`NetworkBroken` naming what broke unless the ruleset in force
        is the one loaded, every link is up and every server answers."""
        if self.broken is not None:
            raise NetworkBroken(self.broken)
        network = self.network
        problems: list[str] = []
        table = network.run.table
        for netns, (generation, script) in self._generations.items():
            if self._generation(netns) == generation:
                continue  # no nftables transaction at all since the load was checked
            where = "the node namespace" if netns == network.run.node else f"namespace {netns}"
            listing = list_table(netns, table)
            if listing is None:
                problems.append(f"the nftables table {table} was deleted from {where}")
            elif listing_problems(table, where, script, listing):
                problems.append(f"the nftables table {table} in {where} was changed since it was loaded")
            else:
                # Another table, or another change undone since: rules of others
                # at the same hooks decide packets too.
                problems.append(f"the nftables ruleset of {where} was changed from outside since table {table} was loaded")
        problems += link_problems(self._kernel[network.run.node].link_states(), network.interfaces)
        exited = self.servers.exited()
        problems += exited
        if not exited and not problems:
            silent = server_problems(network.run.node, self.servers.checks(network.addresses))
            if silent:
                # A server killed just before the check may not have ended when it was
                # asked (it still holds its sockets, answering nothing); by now it has,
                # and how it ended says more than its silence.
                exited = self.servers.exited()
            problems += exited or silent
        if problems:
            self._break(problems)

    def _break(self, problems: Sequence[str]) -> None:
        self.broken = (
            f"the emulated network {self.network.run} is broken, so nothing probed on it is a verdict: "
            + "; ".join(problems)
            + ". It is rebuilt before the next scenario."
        )
        log.warning("%s", self.broken)
        raise NetworkBroken(self.broken)

    # -- probing -----------------------------------------------------------------------

    def probe(self, requests: Sequence[ProbeRequest]) -> list[ProbeResult]:
        """Check the network, then run one round of ``requests``."""
        self.check()
        scratch = self.network.run.log_dir / "bodies"
        setup = RoundSetup(self.workers, scratch, tuple(self._logs.values()), self.index, self._self_policy)
        return run_round(requests, setup)

    def flush_conntrack(self) -> None:
        """Delete every connection tracking entry of the node namespace: no NAT
        binding (nor flow) of an earlier ruleset outlives the one just loaded."""
        self._kernel[self.network.run.node].flush_conntrack()

    def close(self) -> None:
        for netns in {*self._logs, *self._kernel}:
            self._unsubscribe(netns)
        if self._nft is not None:
            self._nft.close()
            self._nft = None
