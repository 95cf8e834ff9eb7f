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

from harness.backends.emulated.integrity import link_problems, list_table, listing_problems, server_problems
from harness.backends.emulated.network import EmulatedNetwork
from harness.backends.emulated.nflog import LogSubscription
from harness.backends.emulated.rounds import ProbeRequest, ProbeResult, RoundSetup, run_round
from harness.backends.emulated.ruleset import LOG_GROUP, LogIndex, RulesetInput, compile_ruleset, remove_table
from harness.backends.emulated.servers import EndpointServers
from harness.core.errors import BackendError

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
        #: What each namespace holding a table of this run listed right after the
        #: last load (netns → listing): what must still be in force.
        self._listed: dict[str, str] = {}
        self._self_tables: set[str] = set()  # pod ids whose namespace holds a table
        self._self_policy = False
        #: Why the network cannot be trusted any more (None while it can).
        self.broken: str | None = None
        self._logs: dict[str, LogSubscription] = {}
        self._subscribe(network.run.node)

    def _subscribe(self, netns: str) -> None:
        if netns not in self._logs:
            self._logs[netns] = LogSubscription(netns, LOG_GROUP)

    def _unsubscribe(self, netns: str) -> None:
        subscription = self._logs.pop(netns, None)
        if subscription is not None:
            subscription.close()

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
        network.load_ruleset(compiled.text)
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
        self._record_listings(compiled.text, {pod: tables[pod] for pod in self._self_tables})
        return compiled.text

    def _record_listings(self, node_script: str, pod_scripts: dict[str, str]) -> None:
        network = self.network
        self._listed = {}
        problems: list[str] = []
        wanted = {network.run.node: (node_script, "the node namespace")}
        wanted.update({network.netns[pod]: (script, f"the namespace of {pod}") for pod, script in pod_scripts.items()})
        for netns, (script, where) in wanted.items():
            listing = list_table(netns, network.run.table)
            problems += listing_problems(network.run.table, where, script, listing)
            if listing is not None:
                self._listed[netns] = listing
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
        for netns, listing in self._listed.items():
            now = list_table(netns, network.run.table)
            where = "the node namespace" if netns == network.run.node else f"namespace {netns}"
            if now is None:
                problems.append(f"the nftables table {network.run.table} was deleted from {where}")
            elif now != listing:
                problems.append(f"the nftables table {network.run.table} in {where} was changed since it was loaded")
        problems += link_problems(network.run.node, network.interfaces)
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

    def close(self) -> None:
        for netns in list(self._logs):
            self._unsubscribe(netns)
