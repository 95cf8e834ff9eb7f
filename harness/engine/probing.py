"""The probe engine shared by every backend.

A backend runs one round of probes; the engine decides which rounds to run. As in
the upstream e2e suite: probe the whole matrix, then re-probe only the cells that
differ from the expectation (a CNI takes a moment to program a change) until a
deadline, and finally, if some cells still differ, probe the whole matrix once
more so the failure report shows one consistent picture.

On a backend that programs changes asynchronously a cell can also *match* only
because the previous state is still in force. So cells that the step's change
flips (by the reference model: ``settle``) count only once they have been seen in
their new state, or once the deadline has passed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.backends.base import Backend
from harness.core.matrix import NOT_PROBED, UNSUPPORTED_CODE, CellSet, Observation, Outcome, ReachabilityMatrix
from harness.core.progress import Progress, silent

log = logging.getLogger(__name__)


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

    def _round(self, cells: CellSet) -> ReachabilityMatrix:
        """One round over ``cells``: the backend probes what it can; cells of a
        protocol it cannot send are observed as unsupported."""
        self.rounds += 1
        caps = self.backend.capabilities
        axes = cells.axes
        supported = {p: cells.masks[p] if p.protocol in caps.protocols else np.zeros(axes.shape, bool) for p in axes.ports}
        wanted = CellSet(axes, supported)
        observed = self.backend.probe(wanted, self.settings.timeout) if wanted else ReachabilityMatrix.empty(axes)
        if observed.axes != axes:
            observed = observed.on_axes(axes)
        skipped = cells.minus(wanted)
        if skipped:
            note = caps.unsupported_note or f"the {self.backend.name} backend cannot probe this protocol"
            observed = observed.with_cells({cell: Observation(Outcome.UNSUPPORTED, note) for cell in skipped})
        return observed.restricted(cells)

    def observe(
        self,
        expected: ReachabilityMatrix,
        settle: ReachabilityMatrix | None = None,
        progress: Progress = silent,
    ) -> ReachabilityMatrix:
        """Probe every cell of ``expected`` and return the observed matrix on the
        same axes. ``settle`` holds, for cells that the change being observed
        flips, the outcome they flip to: such a cell is re-probed until it has been
        seen in it once (or the deadline passes), even when it matches ``expected``."""
        cells = expected.cellset
        observed = self._round(cells)
        if self.backend.capabilities.deterministic:
            return observed
        flipped = {p: np.zeros(expected.axes.shape, bool) for p in expected.ports}
        if settle is not None:
            target = settle.on_axes(expected.axes)
            for port in expected.ports:
                flipped[port] = target.codes(port) != NOT_PROBED

        def pending() -> CellSet:
            masks = {}
            for port in expected.ports:
                got, want = observed.codes(port), expected.codes(port)
                differs = (want != NOT_PROBED) & (got != want) & (got != UNSUPPORTED_CODE)
                if settle is not None:
                    seen = flipped[port] & (got == target.codes(port))
                    flipped[port] &= ~seen  # seen in its new state once: settled
                    differs |= flipped[port]
                masks[port] = differs
            return CellSet(expected.axes, masks)

        todo = pending()
        if not todo:
            return observed

        def reprobe() -> bool:
            nonlocal observed, todo
            progress(f"re-probing {len(todo)} cell(s) not yet seen in their expected or new state")
            observed = observed.overlay(self._round(todo))
            todo = pending()
            return bool(todo)

        retrying = Retrying(
            stop=stop_after_delay(self.settings.deadline),
            wait=wait_fixed(self.settings.interval),
            retry=retry_if_result(bool),
        )
        try:
            retrying(reprobe)
        except RetryError:
            pass  # the deadline passed with cells still pending: handled below
        if todo:
            log.info(
                "%d cell(s) still pending after %.0fs; probing the whole matrix once more", len(todo), self.settings.deadline
            )
            progress("probing the whole matrix once more before judging")
            observed = self._round(cells)
        return observed
