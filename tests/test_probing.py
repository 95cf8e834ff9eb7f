"""The shared probe engine: re-probe differing cells until the deadline, then the
whole matrix once more; and cells that a change flips count only once seen flipped.

A cluster CNI programs policies a moment after they are applied; no backend that
runs here has that delay (the emulated backend's rules are live once their
nftables transaction is committed), so these tests give the reference model one: for the first rounds after a
change it answers with the state of before the change, as a CNI still programming it
does.
"""

from __future__ import annotations

from harness.backends.base import Capabilities
from harness.backends.model import ModelBackend
from harness.core.matrix import ALLOWED, BLOCKED, Cell, CellSet, Observation, Outcome, ReachabilityMatrix
from harness.core.policy import parse_policy
from harness.core.settings import ImplementationSettings
from harness.core.state import DesiredState
from harness.core.topology import PortProtocol, Protocol
from harness.engine.pipeline import Pipeline
from harness.engine.probing import ProbeEngine, ProbeSettings
from harness.scenario import parse_expectation, parse_topology, plan_step

TOPOLOGY = parse_topology(
    {"x": {"pods": {name: {"labels": {"pod": name}, "ports": ["80/TCP", "9000/SCTP"]} for name in ("a", "b", "c")}}}
)
DENY_B = parse_policy(
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]},
    }
)
DENIED = DesiredState(TOPOLOGY).with_policies([DENY_B])


class SlowToProgram(ModelBackend):
    """Answers with the state of before the last change for ``lag`` rounds, and
    records which cells each round probed. SCTP is unsupported, as on the emulated
    backend."""

    capabilities = Capabilities(deterministic=False, protocols=frozenset({Protocol.TCP}), unsupported_note="no SCTP here")

    def __init__(self, lag: int) -> None:
        super().__init__()
        self.lag = lag
        self.rounds: list[list[str]] = []
        self._pending: DesiredState | None = None
        self._since = 0

    def converge(self, state: DesiredState) -> None:
        self._pending = state
        self._since = 0

    def probe(self, cells: CellSet, timeout: float) -> ReachabilityMatrix:
        self.rounds.append([str(c) for c in cells])
        self._since += 1
        if self._since > self.lag and self._pending is not None:
            super().converge(self._pending)
            self._pending = None
        return super().probe(cells, timeout)


A_TO_B = Cell("x/a", "x/b", PortProtocol.parse("80/TCP"))
C_TO_B = Cell("x/c", "x/b", PortProtocol.parse("80/TCP"))
SCTP = Cell("x/a", "x/b", PortProtocol.parse("9000/SCTP"))


def _expected_after_deny(cells_allowed: bool = False) -> ReachabilityMatrix:
    """Every pair of x's pods on both ports: to x/b on 80 blocked, the rest allowed."""
    cells = {}
    for port in ("80/TCP", "9000/SCTP"):
        for src in ("x/a", "x/b", "x/c"):
            for dst in ("x/a", "x/b", "x/c"):
                if src != dst:
                    blocked = dst == "x/b" and port == "80/TCP" and not cells_allowed
                    cells[Cell(src, dst, PortProtocol.parse(port))] = BLOCKED if blocked else ALLOWED
    return ReachabilityMatrix(("x/a", "x/b", "x/c"), ("x/a", "x/b", "x/c"), (PortProtocol.parse("80/TCP"), SCTP.port), cells)


def _observe(backend: SlowToProgram, deadline: float) -> ReachabilityMatrix:
    backend.deploy(TOPOLOGY, ImplementationSettings())
    backend.converge(DENIED)
    engine = ProbeEngine(backend, ProbeSettings(timeout=1.0, deadline=deadline, interval=0.05))
    return engine.observe(_expected_after_deny())


def test_cells_that_differ_are_reprobed_alone_until_they_match() -> None:
    backend = SlowToProgram(lag=2)
    observed = _observe(backend, deadline=5.0)
    assert [len(r) for r in backend.rounds] == [6, 2, 2]
    assert sorted(backend.rounds[1]) == ["x/a → x/b:80/TCP", "x/c → x/b:80/TCP"]
    assert observed[A_TO_B].outcome is Outcome.BLOCKED
    assert observed.count(Outcome.BLOCKED) == 2 and observed.count(Outcome.ALLOWED) == 4


def test_after_the_deadline_the_whole_matrix_is_probed_once_more() -> None:
    backend = SlowToProgram(lag=10_000)  # never programmed
    observed = _observe(backend, deadline=0.3)
    assert len(backend.rounds[0]) == 6 and len(backend.rounds[-1]) == 6
    assert all(len(r) == 2 for r in backend.rounds[1:-1]) and len(backend.rounds) >= 3
    assert observed[A_TO_B].outcome is Outcome.ALLOWED  # the final picture, still wrong


def test_probes_of_unsupported_protocols_never_reach_the_backend() -> None:
    backend = SlowToProgram(lag=1)
    observed = _observe(backend, deadline=5.0)
    assert not any("SCTP" in cell for r in backend.rounds for cell in r)
    assert observed[SCTP] == Observation(Outcome.UNSUPPORTED, "no SCTP here")


def test_a_deterministic_backend_is_probed_once() -> None:
    backend = ModelBackend()
    backend.deploy(TOPOLOGY, ImplementationSettings())
    backend.converge(DENIED)
    engine = ProbeEngine(backend, ProbeSettings(deadline=5.0))
    observed = engine.observe(_expected_after_deny(cells_allowed=True))
    assert engine.rounds == 1
    assert observed[A_TO_B].outcome is Outcome.BLOCKED


def test_a_cell_the_change_flips_counts_only_once_seen_in_its_new_state() -> None:
    """Step 1 has no policy; step 2 denies ingress to x/b but its (wrong) intent says
    x/a → x/b stays allowed. With the old state still in force for two rounds, the
    first round matches that intent; the engine keeps probing the cells the model
    says flipped, sees them blocked, and the step fails as it must."""
    backend = SlowToProgram(lag=2)
    pipeline = Pipeline(backend, ProbeSettings(timeout=1.0, deadline=0.5, interval=0.05))
    pipeline.deploy(TOPOLOGY, ImplementationSettings())
    everything = parse_expectation({"ports": ["80/TCP"], "default": "allowed"}, TOPOLOGY)
    first = plan_step("open", DesiredState(TOPOLOGY), everything, ImplementationSettings(), "<test>")
    wrong_intent = plan_step("deny-b", DENIED, everything, ImplementationSettings(), "<test>")
    assert pipeline.run_step(first).ok
    rounds_before = len(backend.rounds)
    result = pipeline.run_step(wrong_intent)
    probed = backend.rounds[rounds_before:]
    # Round 1: every cell, as the old state answers (all allowed, matching the intent);
    # then only the two cells the model says flip: seen blocked, they now differ from
    # the intent and are re-probed to the deadline; last, the whole matrix once more.
    assert len(probed[0]) == 6 and len(probed[-1]) == 6 and len(probed) > 3
    assert all(sorted(r) == sorted(map(str, (A_TO_B, C_TO_B))) for r in probed[1:-1])
    assert not result.ok
    assert {m.cell for m in result.comparison.mismatches} == {A_TO_B, C_TO_B}


def test_without_the_settle_rule_the_stale_round_would_have_passed() -> None:
    """The same lag observed with no knowledge of the change: one round, all allowed,
    the wrong intent matches. This is the false pass the rule above prevents."""
    backend = SlowToProgram(lag=2)
    backend.deploy(TOPOLOGY, ImplementationSettings())
    backend.converge(DENIED)
    expected = _expected_after_deny(cells_allowed=True)
    observed = ProbeEngine(backend, ProbeSettings(timeout=1.0, deadline=5.0, interval=0.05)).observe(expected)
    assert len(backend.rounds) == 1
    assert observed.count(Outcome.ALLOWED) == 6  # every TCP cell; SCTP unsupported
