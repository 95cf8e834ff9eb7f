"""Reachability matrices: one grid per port/protocol, rows = sources, columns =
destinations. Pure and immutable; compared, rendered as text (upstream e2e style)
and as JSON.

A matrix stores one small integer per cell (the :class:`Outcome`'s code, or
:data:`NOT_PROBED`) in a numpy array per port, and keeps full
:class:`Observation` objects only for the cells that carry more than their
outcome (a detail, a reproduce command, a time). So a step of a thousand pods and
three ports (three million cells) is a few megabytes and is compared in
milliseconds, while a small matrix reads like a mapping of cells.

Symbols: ``.`` allowed, ``X`` blocked, ``R`` refused, ``W`` wrong responder,
``N`` name not resolved, ``P`` partial, ``E`` error, ``U`` unsupported, ``-`` not
probed. A comparison table has its own symbols: ``=`` as expected, ``!`` wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.core.errors import HarnessError
from harness.core.topology import PortProtocol

Codes = npt.NDArray[np.int8]
Mask = npt.NDArray[np.bool_]

#: The code of a cell that was not probed (not part of the matrix).
NOT_PROBED = -1


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    REFUSED = "refused"
    WRONG_RESPONDER = "wrong-responder"
    UNSUPPORTED = "unsupported"
    ERROR = "error"
    #: The destination's name did not resolve (DNS), so nothing was sent to it.
    NAME_NOT_RESOLVED = "name-not-resolved"
    #: A Service whose backing pods disagree: some admit the source, some do not.
    PARTIAL = "partial"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def code(self) -> int:
        return _CODES[self]

    @classmethod
    def from_bool(cls, allowed: bool) -> Outcome:
        return cls.ALLOWED if allowed else cls.BLOCKED

    @classmethod
    def from_code(cls, code: int) -> Outcome:
        return _BY_CODE[code]


_SYMBOLS = {
    Outcome.ALLOWED: ".",
    Outcome.BLOCKED: "X",
    Outcome.REFUSED: "R",
    Outcome.WRONG_RESPONDER: "W",
    Outcome.UNSUPPORTED: "U",
    Outcome.ERROR: "E",
    Outcome.NAME_NOT_RESOLVED: "N",
    Outcome.PARTIAL: "P",
}
_CODES = {outcome: i for i, outcome in enumerate(Outcome)}
_BY_CODE = dict(enumerate(Outcome))
_BY_SYMBOL = {symbol: outcome for outcome, symbol in _SYMBOLS.items()}

ALLOWED_CODE = _CODES[Outcome.ALLOWED]
BLOCKED_CODE = _CODES[Outcome.BLOCKED]
UNSUPPORTED_CODE = _CODES[Outcome.UNSUPPORTED]

LEGEND = (
    ". allowed  X blocked  R refused  W wrong responder  N name not resolved  P partial  E error  U unsupported  - not probed"
)
COMPARISON_LEGEND = "comparison: = as expected  ! wrong  - not probed"


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

    @property
    def plain(self) -> bool:
        """Nothing but the outcome: stored as its code alone."""
        return not (self.detail or self.command or self.elapsed)


#: The observation of a cell that carries nothing but its outcome, by code.
_PLAIN = {code: Observation(outcome) for code, outcome in _BY_CODE.items()}
ALLOWED = _PLAIN[ALLOWED_CODE]
BLOCKED = _PLAIN[BLOCKED_CODE]


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.setflags(write=False)
    return array


class Axes:
    """Rows, columns and ports of a matrix, with index lookups."""

    __slots__ = ("sources", "destinations", "ports", "_row", "_column", "_port")

    def __init__(self, sources: Sequence[str], destinations: Sequence[str], ports: Sequence[PortProtocol]) -> None:
        self.sources = tuple(sources)
        self.destinations = tuple(destinations)
        self.ports = tuple(ports)
        self._row = {s: i for i, s in enumerate(self.sources)}
        self._column = {d: i for i, d in enumerate(self.destinations)}
        self._port = set(self.ports)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.sources), len(self.destinations)

    def index(self, cell: Cell) -> tuple[int, int] | None:
        """Row and column of ``cell``, or None when it is off these axes."""
        if cell.port not in self._port:
            return None
        row = self._row.get(cell.source)
        column = self._column.get(cell.destination)
        if row is None or column is None:
            return None
        return row, column

    def row(self, source: str) -> int | None:
        return self._row.get(source)

    def column(self, destination: str) -> int | None:
        return self._column.get(destination)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Axes):
            return NotImplemented
        return (self.sources, self.destinations, self.ports) == (other.sources, other.destinations, other.ports)

    def __hash__(self) -> int:
        return hash((self.sources, self.destinations, self.ports))

    def reindex(self, codes: Codes, other: Axes) -> Codes:
        """``codes`` drawn on ``other``'s axes, redrawn on these (cells ``other``
        lacks are :data:`NOT_PROBED`)."""
        rows = np.array([other._row.get(s, -1) for s in self.sources], dtype=np.int64)
        cols = np.array([other._column.get(d, -1) for d in self.destinations], dtype=np.int64)
        out = np.full(self.shape, NOT_PROBED, dtype=np.int8)
        if codes.size and len(rows) and len(cols):
            r_ok, c_ok = rows >= 0, cols >= 0
            out[np.ix_(r_ok, c_ok)] = codes[np.ix_(rows[r_ok], cols[c_ok])]
        return out


class CellSet:
    """Which cells of a grid: the cells a backend is asked to probe."""

    def __init__(self, axes: Axes, masks: Mapping[PortProtocol, Mask]) -> None:
        self.axes = axes
        self.masks: Mapping[PortProtocol, Mask] = MappingProxyType({p: _frozen(masks[p].copy()) for p in axes.ports})

    @classmethod
    def from_cells(cls, cells: Iterable[Cell]) -> CellSet:
        """The set of ``cells``, on axes of their sources, destinations and ports in
        the order they first appear."""
        cells = list(cells)
        axes = Axes(
            list(dict.fromkeys(c.source for c in cells)),
            list(dict.fromkeys(c.destination for c in cells)),
            list(dict.fromkeys(c.port for c in cells)),
        )
        return cls.of(cells, axes)

    @classmethod
    def of(cls, cells: Iterable[Cell], axes: Axes) -> CellSet:
        masks = {p: np.zeros(axes.shape, bool) for p in axes.ports}
        for cell in cells:
            where = axes.index(cell)
            if where is None:
                raise HarnessError(f"{cell} is not on the axes of this matrix")
            masks[cell.port][where] = True
        return cls(axes, masks)

    def __len__(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    def __bool__(self) -> bool:
        return any(m.any() for m in self.masks.values())

    def __iter__(self) -> Iterator[Cell]:
        """Cells by port, then source, then destination."""
        axes = self.axes
        for port in axes.ports:
            rows, cols = np.nonzero(self.masks[port])
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                yield Cell(axes.sources[r], axes.destinations[c], port)

    def __contains__(self, cell: object) -> bool:
        if not isinstance(cell, Cell):
            return False
        where = self.axes.index(cell)
        return where is not None and bool(self.masks[cell.port][where])

    def minus(self, other: CellSet) -> CellSet:
        return CellSet(self.axes, {p: self.masks[p] & ~other.masks[p] for p in self.axes.ports})


class ReachabilityMatrix:
    """Cells of a scenario step, with the axis order used to render them.

    ``ReachabilityMatrix(sources, destinations, ports, cells)`` builds one from a
    mapping of cells; :meth:`from_codes` from arrays, which is how large matrices
    are made."""

    def __init__(
        self,
        sources: Sequence[str],
        destinations: Sequence[str],
        ports: Sequence[PortProtocol],
        cells: Mapping[Cell, Observation] | None = None,
    ) -> None:
        axes = Axes(sources, destinations, ports)
        codes = {p: np.full(axes.shape, NOT_PROBED, dtype=np.int8) for p in axes.ports}
        notes: dict[Cell, Observation] = {}
        for cell, obs in (cells or {}).items():
            where = axes.index(cell)
            if where is None:
                raise HarnessError(f"{cell} is not on the axes of this matrix")
            codes[cell.port][where] = obs.outcome.code
            if not obs.plain:
                notes[cell] = obs
        self._init(axes, codes, notes)

    def _init(self, axes: Axes, codes: Mapping[PortProtocol, Codes], notes: Mapping[Cell, Observation]) -> None:
        self.axes = axes
        self._codes: Mapping[PortProtocol, Codes] = MappingProxyType({p: _frozen(codes[p]) for p in axes.ports})
        self._notes: Mapping[Cell, Observation] = MappingProxyType(dict(notes))

    @classmethod
    def from_codes(
        cls,
        axes: Axes,
        codes: Mapping[PortProtocol, Codes],
        notes: Mapping[Cell, Observation] | None = None,
    ) -> ReachabilityMatrix:
        """A matrix from one int8 array of outcome codes per port (``NOT_PROBED``
        where a cell is not part of it), plus the observations that carry more than
        their outcome. The arrays are taken over, not copied: do not change them."""
        matrix = cls.__new__(cls)
        for port in axes.ports:
            if codes[port].shape != axes.shape or codes[port].dtype != np.int8:
                raise HarnessError(f"the codes of {port} have shape {codes[port].shape}, not {axes.shape} of int8")
        matrix._init(axes, codes, {c: o for c, o in (notes or {}).items() if not o.plain})
        return matrix

    @classmethod
    def empty(cls, axes: Axes) -> ReachabilityMatrix:
        return cls.from_codes(axes, {p: np.full(axes.shape, NOT_PROBED, dtype=np.int8) for p in axes.ports})

    # -- axes ------------------------------------------------------------------------

    @property
    def sources(self) -> tuple[str, ...]:
        return self.axes.sources

    @property
    def destinations(self) -> tuple[str, ...]:
        return self.axes.destinations

    @property
    def ports(self) -> tuple[PortProtocol, ...]:
        return self.axes.ports

    # -- access ----------------------------------------------------------------------

    def codes(self, port: PortProtocol) -> Codes:
        """The read-only array of outcome codes of ``port``."""
        return self._codes[port]

    @property
    def notes(self) -> Mapping[Cell, Observation]:
        """The observations that carry more than their outcome."""
        return self._notes

    def observation(self, cell: Cell) -> Observation | None:
        where = self.axes.index(cell)
        if where is None:
            return None
        code = int(self._codes[cell.port][where])
        if code == NOT_PROBED:
            return None
        return self._notes.get(cell) or _PLAIN[code]

    def __getitem__(self, cell: Cell) -> Observation:
        obs = self.observation(cell)
        if obs is None:
            raise KeyError(f"{cell} is not in the matrix")
        return obs

    def __contains__(self, cell: object) -> bool:
        return isinstance(cell, Cell) and self.observation(cell) is not None

    def get(self, source: str, destination: str, port: PortProtocol | str) -> Observation | None:
        key = port if isinstance(port, PortProtocol) else PortProtocol.parse(port)
        return self.observation(Cell(source, destination, key))

    def allowed(self, source: str, destination: str, port: PortProtocol | str) -> bool:
        obs = self.get(source, destination, port)
        if obs is None:
            raise KeyError(f"{source} → {destination}:{port} is not in the matrix")
        return obs.outcome is Outcome.ALLOWED

    @cached_property
    def cellset(self) -> CellSet:
        """The cells this matrix holds."""
        return CellSet(self.axes, {p: self._codes[p] != NOT_PROBED for p in self.ports})

    def __len__(self) -> int:
        return sum(int((c != NOT_PROBED).sum()) for c in self._codes.values())

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cellset)

    def items(self) -> Iterator[tuple[Cell, Observation]]:
        for cell in self.cellset:
            yield cell, self[cell]

    @cached_property
    def cells(self) -> Mapping[Cell, Observation]:
        """Every cell with its observation, as a read-only mapping. Builds one
        object per cell: for small matrices (tests, reports); large ones are read
        through :meth:`codes`."""
        return MappingProxyType(dict(self.items()))

    def count(self, outcome: Outcome) -> int:
        return sum(int((c == outcome.code).sum()) for c in self._codes.values())

    def outcome_counts(self) -> dict[Outcome, int]:
        return {o: n for o in Outcome if (n := self.count(o))}

    # -- changes ---------------------------------------------------------------------

    def with_cells(self, cells: Mapping[Cell, Observation]) -> ReachabilityMatrix:
        codes = {p: self._codes[p].copy() for p in self.ports}
        notes = dict(self._notes)
        for cell, obs in cells.items():
            where = self.axes.index(cell)
            if where is None:
                raise HarnessError(f"{cell} is not on the axes of this matrix")
            codes[cell.port][where] = obs.outcome.code
            notes.pop(cell, None)
            if not obs.plain:
                notes[cell] = obs
        return ReachabilityMatrix.from_codes(self.axes, codes, notes)

    def overlay(self, other: ReachabilityMatrix) -> ReachabilityMatrix:
        """This matrix with every cell ``other`` holds replaced by ``other``'s
        observation (same axes: a re-probe round over some of the cells)."""
        if other.axes != self.axes:
            raise HarnessError("cannot overlay a matrix drawn on other axes")
        codes = {}
        for port in self.ports:
            mine, theirs = self._codes[port], other._codes[port]
            codes[port] = np.where(theirs != NOT_PROBED, theirs, mine).astype(np.int8)
        replaced = other.cellset
        notes = {c: o for c, o in self._notes.items() if c not in replaced}
        notes.update(other._notes)
        return ReachabilityMatrix.from_codes(self.axes, codes, notes)

    def restricted(self, cells: CellSet) -> ReachabilityMatrix:
        """Only the cells of ``cells`` (same axes)."""
        codes = {p: np.where(cells.masks[p], self._codes[p], NOT_PROBED).astype(np.int8) for p in self.ports}
        notes = {c: o for c, o in self._notes.items() if c in cells}
        return ReachabilityMatrix.from_codes(self.axes, codes, notes)

    def on_axes(self, axes: Axes) -> ReachabilityMatrix:
        """This matrix redrawn on ``axes`` (cells off them are dropped)."""
        if axes == self.axes:
            return self
        codes = {}
        for port in axes.ports:
            if port in self._codes:
                codes[port] = axes.reindex(self._codes[port], self.axes)
            else:
                codes[port] = np.full(axes.shape, NOT_PROBED, dtype=np.int8)
        notes = {c: o for c, o in self._notes.items() if axes.index(c) is not None}
        return ReachabilityMatrix.from_codes(axes, codes, notes)

    def without_commands(self) -> ReachabilityMatrix:
        """Outcomes and details only: what stays true wherever the matrix is read."""
        notes = {c: Observation(o.outcome, o.detail) for c, o in self._notes.items()}
        return ReachabilityMatrix.from_codes(self.axes, dict(self._codes), notes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReachabilityMatrix):
            return NotImplemented
        return (
            self.axes == other.axes
            and all(np.array_equal(self._codes[p], other._codes[p]) for p in self.ports)
            and dict(self._notes) == dict(other._notes)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReachabilityMatrix({len(self.sources)} sources × {len(self.destinations)} destinations, {len(self)} cells)"

    # -- rendering -----------------------------------------------------------------

    def columns(self, port: PortProtocol) -> tuple[str, ...]:
        """Destinations probed on ``port``, in axis order."""
        present = (self._codes[port] != NOT_PROBED).any(axis=0)
        return tuple(d for d, keep in zip(self.destinations, present.tolist(), strict=True) if keep)

    def symbol(self, source: str, destination: str, port: PortProtocol) -> str:
        obs = self.observation(Cell(source, destination, port))
        return "-" if obs is None else obs.outcome.symbol

    def render(self, title: str = "", ports: Iterable[PortProtocol] | None = None) -> str:
        return "\n\n".join(
            render_grid(f"{title} {port}".strip(), self.sources, self.columns(port), lambda s, d, p=port: self.symbol(s, d, p))
            for port in (self.ports if ports is None else ports)
        )

    def to_json(self) -> dict[str, Any]:
        """``{"sources", "destinations", "ports": {port: [row, ...]}, "notes":
        [...]}``: each row one symbol per destination (``-`` not probed), each
        note a cell with more than its outcome. Compact, so that a large matrix
        stays a few bytes per cell."""
        rows: dict[str, list[str]] = {}
        table = np.array(["-", *(_SYMBOLS[o] for o in Outcome)])
        for port in self.ports:
            symbols = table[self._codes[port].astype(np.int64) + 1]
            rows[str(port)] = ["".join(row) for row in symbols.tolist()]
        notes = []
        for cell, obs in sorted(self._notes.items()):
            entry: dict[str, Any] = {"source": cell.source, "destination": cell.destination, "port": str(cell.port)}
            entry["outcome"] = obs.outcome.value
            if obs.detail:
                entry["detail"] = obs.detail
            if obs.command:
                entry["command"] = obs.command
            if obs.elapsed:
                entry["elapsed"] = obs.elapsed
            notes.append(entry)
        return {"sources": list(self.sources), "destinations": list(self.destinations), "ports": rows, "notes": notes}

    @classmethod
    def from_json(cls, data: Any) -> ReachabilityMatrix:
        try:
            axes = Axes(
                [str(s) for s in data["sources"]],
                [str(d) for d in data["destinations"]],
                [PortProtocol.parse(p) for p in data["ports"]],
            )
            lookup = np.full(128, -2, dtype=np.int8)
            lookup[ord("-")] = NOT_PROBED
            for symbol, outcome in _BY_SYMBOL.items():
                lookup[ord(symbol)] = outcome.code
            codes = {}
            for port in axes.ports:
                rows = data["ports"][str(port)]
                if not isinstance(rows, list) or len(rows) != len(axes.sources):
                    raise ValueError(f"{port}: {len(axes.sources)} rows expected")
                grid = np.full(axes.shape, NOT_PROBED, dtype=np.int8)
                for i, row in enumerate(rows):
                    if not isinstance(row, str) or len(row) != len(axes.destinations) or not row.isascii():
                        raise ValueError(f"{port}: row {i} is not {len(axes.destinations)} symbols")
                    values = lookup[np.frombuffer(row.encode("ascii"), dtype=np.uint8)] if row else np.zeros(0, np.int8)
                    if (values == -2).any():
                        raise ValueError(f"{port}: row {i} has an unknown symbol")
                    grid[i] = values
                codes[port] = grid
            notes = {}
            for entry in data.get("notes", []):
                cell = Cell(str(entry["source"]), str(entry["destination"]), PortProtocol.parse(entry["port"]))
                obs = Observation(
                    Outcome(entry["outcome"]),
                    str(entry.get("detail", "")),
                    str(entry.get("command", "")),
                    float(entry.get("elapsed", 0.0)),
                )
                where = axes.index(cell)
                if where is None or int(codes[cell.port][where]) != obs.outcome.code:
                    raise ValueError(f"note for {cell} does not match its cell")
                notes[cell] = obs
            return cls.from_codes(axes, codes, notes)
        except (KeyError, TypeError, ValueError, AttributeError, HarnessError) as err:
            raise HarnessError(f"not a reachability matrix in JSON form: {err!r}") from None


def _at_port(symbol: Any, port: PortProtocol, source: str, destination: str) -> str:
    return str(symbol(source, destination, port))


def labels_where(labels: Sequence[str], mask: npt.ArrayLike) -> list[str]:
    """The labels (sources or destinations) at the positions ``mask`` is true."""
    return [labels[i] for i in np.flatnonzero(mask).tolist()]


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


#: Most cells a failure text lists one by one; the rest are counted by group.
LISTED_CELLS = 20
#: Largest grid drawn whole in a failure text (rows × columns); larger ones are
#: drawn around their wrong cells.
DRAWN_CELLS = 2500
_DRAWN_AXIS = 40


@dataclass(frozen=True, eq=False)
class Comparison:
    """Expected vs. observed. Unsupported probes are neither right nor wrong: they
    are listed separately so that a backend's gap is never taken for a verdict."""

    expected: ReachabilityMatrix
    observed: ReachabilityMatrix
    #: Per port of the expected matrix: cells that differ, cells not probed on this backend.
    wrong: Mapping[PortProtocol, Mask] = field(repr=False)
    unsupported_mask: Mapping[PortProtocol, Mask] = field(repr=False)

    @property
    def ok(self) -> bool:
        return not any(m.any() for m in self.wrong.values())

    @cached_property
    def mismatch_count(self) -> int:
        return sum(int(m.sum()) for m in self.wrong.values())

    @cached_property
    def unsupported_count(self) -> int:
        return sum(int(m.sum()) for m in self.unsupported_mask.values())

    @property
    def probes(self) -> int:
        return len(self.expected)

    def wrong_cellset(self) -> CellSet:
        return CellSet(self.expected.axes, self.wrong)

    def iter_mismatches(self) -> Iterator[Mismatch]:
        for cell in self.wrong_cellset():
            obs = self.observed.observation(cell) or Observation(Outcome.ERROR, "not probed")
            yield Mismatch(cell, self.expected[cell].outcome, obs)

    @cached_property
    def mismatches(self) -> tuple[Mismatch, ...]:
        return tuple(self.iter_mismatches())

    def wrong_cells(self) -> frozenset[Cell]:
        return frozenset(self.wrong_cellset())

    @cached_property
    def unsupported(self) -> tuple[Cell, ...]:
        return tuple(CellSet(self.expected.axes, self.unsupported_mask))

    def render(self, title: str = "", explanations: Mapping[Cell, str] | None = None) -> str:
        """One line per wrong cell (at most :data:`LISTED_CELLS`, the others counted
        per source and destination namespace) with the command that reproduces it,
        then the expected, observed and comparison tables of each port with a wrong
        cell. ``explanations`` adds the reference model's reason to a cell's line."""
        blocks = []
        if not self.ok:
            blocks.append(mismatch_lines(self.iter_mismatches(), self.mismatch_count, explanations or {}))
        blocks += self._tables(title)
        if self.unsupported_count:
            first = self.unsupported[:LISTED_CELLS]
            notes = "\n".join(f"{c} unsupported ({self.observed[c].detail})" for c in first)
            more = f"\n... and {self.unsupported_count - len(first)} more" if self.unsupported_count > len(first) else ""
            blocks.append(f"{self.unsupported_count} probe(s) not run on this backend:\n{notes}{more}")
        return "\n\n".join(blocks)

    def _tables(self, title: str) -> list[str]:
        failing = [p for p in self.expected.ports if self.wrong[p].any()]
        # Ports whose cells all match add nothing to a failure report.
        ports = failing or list(self.expected.ports)
        blocks = []
        for port in ports:
            rows, columns = list(self.expected.sources), list(self.expected.columns(port))
            note = ""
            if len(rows) * len(columns) > DRAWN_CELLS:
                wrong = self.wrong[port]
                rows = labels_where(self.expected.sources, wrong.any(axis=1))[:_DRAWN_AXIS]
                col_set = set(labels_where(self.expected.destinations, wrong.any(axis=0)))
                columns = [c for c in columns if c in col_set][:_DRAWN_AXIS]
                note = f" (rows and columns with a wrong cell only, at most {_DRAWN_AXIS} of each)"
            grids = (("expected", self.expected.symbol), ("observed", self.observed.symbol), ("comparison", self._diff_symbol))
            for name, symbol in grids:
                blocks.append(render_grid(f"{title}{name} {port}{note}", rows, columns, partial(_at_port, symbol, port)))
        blocks.append(LEGEND + "\n" + COMPARISON_LEGEND)
        return blocks

    def _diff_symbol(self, source: str, destination: str, port: PortProtocol) -> str:
        cell = Cell(source, destination, port)
        where = self.expected.axes.index(cell)
        if where is None or int(self.expected.codes(port)[where]) == NOT_PROBED:
            return "-"
        return "!" if bool(self.wrong[port][where]) else "="


def mismatch_lines(mismatches: Iterable[Mismatch], total: int, explanations: Mapping[Cell, str]) -> str:
    """The first wrong cells one per line (with why and how to reproduce), then the
    rest counted per source and destination namespace."""
    lines = [f"{total} wrong cell(s):"]
    rest: dict[tuple[str, str, PortProtocol, Outcome], int] = {}
    for i, m in enumerate(mismatches):
        if i < LISTED_CELLS:
            lines.append(m.line())
            why = explanations.get(m.cell)
            if why:
                lines.append(f"    model: {why}")
            if m.observed.command:
                lines.append(f"    reproduce: {m.observed.command}")
        else:
            key = (_group(m.cell.source), _group(m.cell.destination), m.cell.port, m.expected)
            rest[key] = rest.get(key, 0) + 1
    if rest:
        lines.append(f"... and {total - LISTED_CELLS} more (all in the reports), by group:")
        for (src, dst, port, want), n in sorted(rest.items(), key=lambda kv: (-kv[1], str(kv[0][0]), str(kv[0][1]))):
            lines.append(f"  {src} → {dst}:{port} expected {want.value}: {n} cell(s)")
    return "\n".join(lines)


def _group(endpoint: str) -> str:
    namespace, slash, _ = endpoint.partition("/")
    return f"{namespace}/*" if slash else endpoint


def compare(expected: ReachabilityMatrix, observed: ReachabilityMatrix) -> Comparison:
    """Every expected cell must be observed with the same outcome; a cell observed
    as unsupported is set apart, a cell not observed at all is wrong."""
    seen = observed.on_axes(expected.axes)
    wrong: dict[PortProtocol, Mask] = {}
    unsupported: dict[PortProtocol, Mask] = {}
    for port in expected.ports:
        want, got = expected.codes(port), seen.codes(port)
        probed = want != NOT_PROBED
        unsupported[port] = _frozen(probed & (got == UNSUPPORTED_CODE))
        wrong[port] = _frozen(probed & (got != want) & ~unsupported[port])
    return Comparison(expected, seen, MappingProxyType(wrong), MappingProxyType(unsupported))


def iter_cells(sources: Iterable[str], destinations: Iterable[str], ports: Iterable[PortProtocol]) -> Iterator[Cell]:
    for port in ports:
        for src in sources:
            for dst in destinations:
                yield Cell(src, dst, port)
