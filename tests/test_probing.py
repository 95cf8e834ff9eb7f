"""The shared probe engine: re-probe differing cells until the deadline, then the
whole matrix once more.

A cluster CNI programs policies a moment after they are applied; no backend that
runs here has that delay (the emulated backend's rules are live when `nft -f`
returns), so these tests give the reference model one: for the first rounds after a
change it answers as if the change had not reached the data path yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.backends.base import Probe
from harness.backends.model import ModelBackend
from harness.core.matrix import Cell, Observation, Outcome
from harness.core.policy import NetworkPolicy, parse_policy
from harness.core.topology import PortProtocol, Protocol
from harness.engine.probing import ProbeEngine, ProbeSettings
from harness.scenario import parse_topology

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


class SlowToProgram(ModelBackend):
    """Answers with the policies of before the last change for ``lag`` rounds, and
    records which probes each round ran. SCTP is unsupported, as on the emulated
    backend."""

    deterministic = False
    protocols = frozenset({Protocol.TCP})
    unsupported_note = "no SCTP here"

    def __init__(self, lag: int) -> None:
        super().__init__()
        self.lag = lag
        self.rounds: list[list[str]] = []
        self._pending: Sequence[NetworkPolicy] = ()

    def apply_policies(self, policies: Sequence[NetworkPolicy]) -> None:
        self._pending = policies

    def probe(self, probes: Sequence[Probe], timeout: float) -> dict[Probe, Observation]:
        self.rounds.append([str(p.cell) for p in probes])
        if len(self.rounds) > self.lag and self._pending:
            super().apply_policies(self._pending)
            self._pending = ()
        return super().probe(probes, timeout)


A_TO_B = Cell("x/a", "x/b", PortProtocol.parse("80/TCP"))


def _probes() -> list[Probe]:
    return [
        Probe(TOPOLOGY.pod(src), TOPOLOGY.pod(dst), PortProtocol.parse(port))
        for port in ("80/TCP", "9000/SCTP")
        for src in ("x/a", "x/b", "x/c")
        for dst in ("x/a", "x/b", "x/c")
        if src != dst
    ]


def _expected_after_deny() -> dict:
    return {p.cell: (Outcome.BLOCKED if p.destination.id == "x/b" and p.port.port == 80 else Outcome.ALLOWED) for p in _probes()}


def _run(backend: SlowToProgram, deadline: float) -> dict:
    backend.deploy(TOPOLOGY)
    backend.apply_policies([DENY_B])
    engine = ProbeEngine(backend, ProbeSettings(timeout=1.0, deadline=deadline, interval=0.05))
    return engine.run(_probes(), _expected_after_deny())


def test_cells_that_differ_are_reprobed_alone_until_they_match() -> None:
    backend = SlowToProgram(lag=2)
    observed = _run(backend, deadline=5.0)
    assert [len(r) for r in backend.rounds] == [6, 2, 2]
    assert sorted(backend.rounds[1]) == ["x/a → x/b:80/TCP", "x/c → x/b:80/TCP"]
    assert observed[A_TO_B].outcome is Outcome.BLOCKED
    assert all(
        obs.outcome is _expected_after_deny()[cell] or obs.outcome is Outcome.UNSUPPORTED for cell, obs in observed.items()
    )


def test_after_the_deadline_the_whole_matrix_is_probed_once_more() -> None:
    backend = SlowToProgram(lag=10_000)  # never programmed
    observed = _run(backend, deadline=0.3)
    assert len(backend.rounds[0]) == 6 and len(backend.rounds[-1]) == 6
    assert all(len(r) == 2 for r in backend.rounds[1:-1]) and len(backend.rounds) >= 3
    assert observed[A_TO_B].outcome is Outcome.ALLOWED  # the final picture, still wrong


def test_probes_of_unsupported_protocols_never_reach_the_backend() -> None:
    backend = SlowToProgram(lag=1)
    observed = _run(backend, deadline=5.0)
    assert not any("SCTP" in cell for r in backend.rounds for cell in r)
    sctp = Cell("x/a", "x/b", PortProtocol.parse("9000/SCTP"))
    assert observed[sctp] == Observation(Outcome.UNSUPPORTED, "no SCTP here")


def test_a_deterministic_backend_is_probed_once() -> None:
    backend = ModelBackend()
    backend.deploy(TOPOLOGY)
    backend.apply_policies([DENY_B])
    engine = ProbeEngine(backend, ProbeSettings(deadline=5.0))
    wrong = {cell: Outcome.ALLOWED for cell in _expected_after_deny()}
    observed = engine.run(_probes(), wrong)
    assert engine.rounds == 1
    assert observed[A_TO_B].outcome is Outcome.BLOCKED
