"""Reachability matrices: one grid per port/protocol, rows = sources, columns =
destinations. Pure and immutable; compared, rendered as text (upstream e2e style)
and as JSON.

Symbols: ``.`` allowed, ``X`` blocked, ``R`` refused, ``W`` wrong responder,
``E`` error, ``U`` unsupported, ``-`` not probed. In a comparison table ``.`` is a
matching cell and ``X`` a wrong one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from harness.core.errors import HarnessError
from harness.core.topology import PortProtocol


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    REFUSED = "refused"
    WRONG_RESPONDER = "wrong-responder"
    UNSUPPORTED = "unsupported"
    ERROR = "error"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @classmethod
    def from_bool(cls, allowed: bool) -> Outcome:
        return cls.ALLOWED if allowed else cls.BLOCKED


_SYMBOLS = {
    Outcome.ALLOWED: ".",
    Outcome.BLOCKED: "X",
    Outcome.REFUSED: "R",
    Outcome.WRONG_RESPONDER: "W",
    Outcome.UNSUPPORTED: "U",
    Outcome.ERROR: "E",
}

LEGEND = ". allowed  X blocked  R refused  W wrong responder  E error  U unsupported  - not probed"


@dataclass(frozen=True, order=True)
class Cell:
    source: str
    destination: str
    port: PortProtocol

    def __str__(self) -> str:
        return f"{self.source} → {self.destination}:{self.port}"


@dataclass(frozen=True)
class Observation:
    """What one probe saw (or, in an expected matrix, what should be seen).

    ``detail`` says why (``timeout``, ``connection refused``, ``answered by x/b``);
    ``command`` reproduces the probe by hand.
    """

    outcome: Outcome
    detail: str = ""
    command: str = ""
    elapsed: float = 0.0

    def describe(self) -> str:
        text = self.outcome.value
        return f"{text} ({self.detail})" if self.detail else text


ALLOWED = Observation(Outcome.ALLOWED)
BLOCKED = Observation(Outcome.BLOCKED)


@dataclass(frozen=True)
class ReachabilityMatrix:
    """Cells of a scenario step, with the axis order used to render them."""

    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[PortProtocol, ...]
    cells: Mapping[Cell, Observation] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", MappingProxyType(dict(self.cells)))

    def __getitem__(self, cell: Cell) -> Observation:
        return self.cells[cell]

    def get(self, source: str, destination: str, port: PortProtocol | str) -> Observation | None:
        key = port if isinstance(port, PortProtocol) else PortProtocol.parse(port)
        return self.cells.get(Cell(source, destination, key))

    def allowed(self, source: str, destination: str, port: PortProtocol | str) -> bool:
        obs = self.get(source, destination, port)
        if obs is None:
            raise KeyError(f"{source} → {destination}:{port} is not in the matrix")
        return obs.outcome is Outcome.ALLOWED

    def with_cells(self, cells: Mapping[Cell, Observation]) -> ReachabilityMatrix:
        merged = dict(self.cells)
        merged.update(cells)
        return ReachabilityMatrix(self.sources, self.destinations, self.ports, merged)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for obs in self.cells.values() if obs.outcome is outcome)

    # -- rendering -----------------------------------------------------------------

    def columns(self, port: PortProtocol) -> tuple[str, ...]:
        """Destinations probed on ``port``, in axis order."""
        present = {c.destination for c in self.cells if c.port == port}
        return tuple(d for d in self.destinations if d in present)

    def render(self, title: str = "", ports: Iterable[PortProtocol] | None = None) -> str:
        return "\n\n".join(
            render_grid(f"{title} {port}".strip(), self.sources, self.columns(port), lambda s, d, p=port: self._symbol(s, d, p))
            for port in (self.ports if ports is None else ports)
        )

    def _symbol(self, source: str, destination: str, port: PortProtocol) -> str:
        obs = self.cells.get(Cell(source, destination, port))
        return "-" if obs is None else obs.outcome.symbol

    def to_json(self) -> dict[str, Any]:
        ports: dict[str, Any] = {}
        for port in self.ports:
            rows: dict[str, Any] = {}
            for src in self.sources:
                row = {}
                for dst in self.destinations:
                    obs = self.cells.get(Cell(src, dst, port))
                    if obs is not None:
                        entry: dict[str, Any] = {"outcome": obs.outcome.value}
                        if obs.detail:
                            entry["detail"] = obs.detail
                        if obs.command:
                            entry["command"] = obs.command
                        row[dst] = entry
                rows[src] = row
            ports[str(port)] = rows
        return {"sources": list(self.sources), "destinations": list(self.destinations), "ports": ports}

    @classmethod
    def from_json(cls, data: Any) -> ReachabilityMatrix:
        try:
            ports = tuple(PortProtocol.parse(p) for p in data["ports"])
            cells = {}
            for port in ports:
                for src, row in data["ports"][str(port)].items():
                    for dst, entry in row.items():
                        cells[Cell(src, dst, port)] = Observation(
                            Outcome(entry["outcome"]), entry.get("detail", ""), entry.get("command", "")
                        )
            return cls(tuple(data["sources"]), tuple(data["destinations"]), ports, cells)
        except (KeyError, TypeError, ValueError, AttributeError, HarnessError) as err:
            raise HarnessError(f"not a reachability matrix in JSON form: {err!r}") from None


def render_grid(title: str, rows: Iterable[str], columns: Iterable[str], symbol: Any) -> str:
    """A titled table, one row per ``rows`` entry, ``symbol(row, column)`` per cell."""
    rows, columns = list(rows), list(columns)
    width = max([len(r) for r in rows] + [1])
    col_w = [max(len(c), 1) for c in columns]
    lines = [title, " " * width + " " + " ".join(c.ljust(w) for c, w in zip(columns, col_w, strict=True))]
    for r in rows:
        cells = " ".join(symbol(r, c).center(w) for c, w in zip(columns, col_w, strict=True))
        lines.append(f"{r.ljust(width)} {cells}".rstrip())
    return "\n".join(lines)


@dataclass(frozen=True)
class Mismatch:
    cell: Cell
    expected: Outcome
    observed: Observation

    def line(self) -> str:
        return f"{self.cell} expected {self.expected.value}, observed {self.observed.describe()}"


@dataclass(frozen=True)
class Comparison:
    """Expected vs. observed. Unsupported probes are neither right nor wrong: they
    are listed separately so that a backend's gap is never taken for a verdict."""

    expected: ReachabilityMatrix
    observed: ReachabilityMatrix
    mismatches: tuple[Mismatch, ...]
    unsupported: tuple[Cell, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def wrong_cells(self) -> frozenset[Cell]:
        return frozenset(m.cell for m in self.mismatches)

    def render(self, title: str = "") -> str:
        """Expected, observed and comparison tables per port, then one line per
        wrong cell followed by the command that reproduces it."""
        wrong = self.wrong_cells()
        failing = {c.port for c in wrong}
        # Ports whose cells all match add nothing to a failure report.
        ports = [p for p in self.expected.ports if p in failing] or list(self.expected.ports)
        blocks = []
        for port in ports:
            columns = self.expected.columns(port)
            blocks.append(self.expected.render(f"{title}expected", [port]))
            blocks.append(self.observed.render(f"{title}observed", [port]))

            def diff(s: str, d: str, p: PortProtocol = port) -> str:
                cell = Cell(s, d, p)
                if cell in wrong:
                    return "X"
                return "." if cell in self.expected.cells else "-"

            blocks.append(render_grid(f"{title}comparison {port}", self.expected.sources, columns, diff))
        blocks.append(LEGEND)
        lines = [m.line() + (f"\n    reproduce: {m.observed.command}" if m.observed.command else "") for m in self.mismatches]
        if lines:
            blocks.append(f"{len(self.mismatches)} wrong cell(s):\n" + "\n".join(lines))
        if self.unsupported:
            notes = "\n".join(f"{c} unsupported ({self.observed.cells[c].detail})" for c in self.unsupported)
            blocks.append(f"{len(self.unsupported)} probe(s) not run on this backend:\n{notes}")
        return "\n\n".join(blocks)


def compare(expected: ReachabilityMatrix, observed: ReachabilityMatrix) -> Comparison:
    """Every expected cell must be observed with the same outcome."""
    mismatches = []
    unsupported = []
    for cell in sorted(expected.cells):
        want = expected.cells[cell].outcome
        got = observed.cells.get(cell)
        if got is None:
            mismatches.append(Mismatch(cell, want, Observation(Outcome.ERROR, "not probed")))
        elif got.outcome is Outcome.UNSUPPORTED:
            unsupported.append(cell)
        elif got.outcome is not want:
            mismatches.append(Mismatch(cell, want, got))
    return Comparison(expected, observed, tuple(mismatches), tuple(unsupported))


def iter_cells(sources: Iterable[str], destinations: Iterable[str], ports: Iterable[PortProtocol]) -> Iterator[Cell]:
    for port in ports:
        for src in sources:
            for dst in destinations:
                yield Cell(src, dst, port)
