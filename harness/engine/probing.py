"""The probe engine shared by every backend.

A backend runs one round of probes; the engine decides which rounds to run. As in
the upstream e2e suite: probe the whole matrix, then re-probe only the cells that
differ from the expectation (policies take a moment to be programmed) until a
deadline, and finally, if some cells still differ, probe the whole matrix once more
so the failure report shows one consistent picture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.backends.base import Backend, Probe
from harness.core.matrix import Cell, Observation, Outcome, ReachabilityMatrix
from harness.core.topology import Topology

log = logging.getLogger(__name__)

#: Outcomes that are final: re-probing them cannot change the verdict.
_FINAL = frozenset({Outcome.UNSUPPORTED})


@dataclass(frozen=True)
class ProbeSettings:
    """``timeout``: seconds one probe may take (a blocked TCP probe waits this long).
    ``deadline``: seconds to keep re-probing cells that differ from the expectation.
    ``interval``: pause between re-probe rounds."""

    timeout: float = 1.0
    deadline: float = 10.0
    interval: float = 1.0


class ProbeEngine:
    def __init__(self, backend: Backend, settings: ProbeSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or ProbeSettings()
        self.rounds = 0

    def _round(self, probes: Sequence[Probe]) -> dict[Cell, Observation]:
        self.rounds += 1
        supported = [p for p in probes if p.port.protocol in self.backend.protocols]
        results = self.backend.probe(supported, self.settings.timeout) if supported else {}
        observed = {p.cell: results[p] for p in supported}
        for probe in probes:
            if probe.cell not in observed:
                note = self.backend.unsupported_note or (
                    f"{probe.port.protocol} is not supported by the {self.backend.name} backend"
                )
                observed[probe.cell] = Observation(Outcome.UNSUPPORTED, note)
        return observed

    def observe(
        self, expected: ReachabilityMatrix, topology: Topology, progress: Callable[[str], None] | None = None
    ) -> ReachabilityMatrix:
        """Probe every cell of ``expected`` (endpoints looked up in ``topology``) and
        return the observed matrix on the same axes."""
        probes = [Probe(topology.pod(c.source), topology.endpoint(c.destination), c.port) for c in expected.cells]
        observed = self.run(probes, {c: o.outcome for c, o in expected.cells.items()}, progress)
        return ReachabilityMatrix(expected.sources, expected.destinations, expected.ports, observed)

    def run(
        self,
        probes: Sequence[Probe],
        expected: Mapping[Cell, Outcome],
        progress: Callable[[str], None] | None = None,
    ) -> dict[Cell, Observation]:
        """Observations for ``probes``, retried against ``expected``."""
        observed = self._round(probes)
        if self.backend.deterministic:
            return observed

        def differing() -> list[Probe]:
            return [
                p
                for p in probes
                if observed[p.cell].outcome not in _FINAL and observed[p.cell].outcome is not expected.get(p.cell)
            ]

        pending = differing()
        if not pending:
            return observed

        def reprobe() -> list[Probe]:
            nonlocal pending
            if progress:
                progress(f"re-probing {len(pending)} cell(s) that differ from the expectation")
            observed.update(self._round(pending))
            pending = differing()
            return pending

        retrying = Retrying(
            stop=stop_after_delay(self.settings.deadline),
            wait=wait_fixed(self.settings.interval),
            retry=retry_if_result(bool),
        )
        try:
            retrying(reprobe)
        except RetryError:
            pass  # the deadline passed with cells still differing: handled below
        if pending:
            log.info(
                "%d cell(s) still differ after %.0fs; probing the whole matrix once more", len(pending), self.settings.deadline
            )
            if progress:
                progress("probing the whole matrix once more before failing")
            observed = self._round(probes)
        return observed
