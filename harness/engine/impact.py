"""What a change does to one scenario step: the cells it opens (blocked → allowed) and
closes (allowed → blocked), grouped so that a reviewer reads

    production/* → production/db:3306/TCP: opened for 2 sources (production/allow-db, modified: now admits)

rather than a list of cells, with the policies whose edits caused each group.

Both sides are reference models of the step (the state in force at the base revision
and in the working tree, or the enforced policies without and with the staged ones).
Cells are compared on the grid both sides probe; cells only one side probes are
counted as new or gone.

Grouping: per change and port, the destinations whose changed sources are the same set
form one group (a pod's own, unprobed cell counts as a member, so that a whole
namespace stays one group); sources and destinations are then written with the
scenario's endpoint patterns (``ns/*`` for a complete namespace, ``*/*`` for every
pod, ``*`` for every endpoint), and groups that read the same on several ports are
merged. A group's patterns can be pasted into an ``expect`` rule.

Attribution, per changed cell and per side that flipped (the source's egress, the
destination's ingress): an opened cell is caused by the policies that stopped isolating
the pod, when it is no longer isolated, or else by those that now admit the cell; a
closed cell by those that newly isolate the pod, when it was not isolated, or else by
those that no longer admit it. Only policies whose definition changed are candidates,
unless the scenario's labels, ports, addresses or settings changed too; cells no
candidate explains are marked ``unexplained``. Each candidate is evaluated on the rows
of the pods it selects only, from the model's per-policy admission blocks.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.core.cluster_policy import ClusterPolicy, Tier
from harness.core.matrix import Cell
from harness.core.policy import NetworkPolicy, PolicyType
from harness.core.topology import PortProtocol
from harness.model.reference import Admission, ReferenceModel

Mask = npt.NDArray[np.bool_]

#: Pods of a partly changed namespace kept in a group's patterns (the rest are counted).
MAX_LISTED = 50
#: Patterns a one-line summary shows before "and N more".
SUMMARY_LISTED = 4
#: Lines of one file's diff kept, and lines of a file diffed at most.
MAX_DIFF_LINES = 200
MAX_DIFF_INPUT_LINES = 20_000


class Change(enum.Enum):
    OPENED = "opened"
    CLOSED = "closed"


class Edit(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    UNCHANGED = "unchanged"


class CauseKind(enum.Enum):
    ADMITS = "now admits"
    STOPS_ISOLATING = "no longer isolates"
    ISOLATES = "now isolates"
    STOPS_ADMITTING = "no longer admits"
    #: A cluster policy's Deny (Admin tier, or Baseline for pods that no
    #: NetworkPolicy isolates) now decides the side, or no longer does.
    DENIES = "now denies"
    STOPS_DENYING = "no longer denies"


@dataclass(frozen=True)
class Cause:
    """A policy (by reported name) and what its edit did to the group's cells."""

    policy: str
    kind: CauseKind
    edit: Edit

    def sort_key(self) -> tuple[str, str]:
        return (self.policy, self.kind.value)

    def __str__(self) -> str:
        return f"{self.policy} ({self.edit.value}) {self.kind.value}"


@dataclass(frozen=True)
class EndpointSet:
    """Endpoints as scenario patterns; ``omitted`` pods of partly included namespaces
    beyond :data:`MAX_LISTED` are counted, not listed."""

    patterns: tuple[str, ...]
    count: int
    omitted: int = 0

    def text(self, limit: int = SUMMARY_LISTED) -> str:
        shown = list(self.patterns[:limit])
        more = len(self.patterns) - len(shown) + self.omitted
        text = ", ".join(shown)
        return f"{text} and {more} more" if more else text


@dataclass(frozen=True)
class ImpactGroup:
    change: Change
    sources: EndpointSet
    destinations: EndpointSet
    ports: tuple[PortProtocol, ...]
    cells: int
    causes: tuple[Cause, ...] = ()
    #: Some cells changed without any changed policy to blame: the scenario's labels,
    #: ports, addresses or settings changed.
    unexplained: bool = False

    def summary(self) -> str:
        ports = ", ".join(map(str, self.ports))
        n, m = self.sources.count, self.destinations.count
        plural = "" if n == 1 else "s"
        if m == 1:
            text = f"{self.sources.text()} → {self.destinations.text()}:{ports}: {self.change.value} for {n} source{plural}"
            if len(self.ports) > 1:
                text += f" ({self.cells} cells)"
        else:
            text = (
                f"{self.sources.text()} → {self.destinations.text()} on {ports}: {self.change.value} for {n} source{plural} "
                f"to {m} destinations ({self.cells} cells)"
            )
        return f"{text}; {self.cause_text()}"

    def cause_text(self) -> str:
        parts = [str(c) for c in self.causes]
        if self.unexplained:
            parts.append("a change of the scenario's labels, ports or settings")
        return "caused by " + ("; ".join(parts) or "no policy change")

    def expect_rule(self, result: str = "allowed") -> dict[str, Any] | None:
        """An ``expect`` rule that declares this group's cells ``result``, for a team
        acknowledging an intended opening; None when a pattern list is abridged."""
        if self.sources.omitted or self.destinations.omitted:
            return None
        rule: dict[str, Any] = {"from": list(self.sources.patterns), "to": list(self.destinations.patterns)}
        rule["port"] = str(self.ports[0]) if len(self.ports) == 1 else "*"
        rule["result"] = result
        return rule if len(self.ports) == 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.change.value,
            "sources": {"patterns": list(self.sources.patterns), "count": self.sources.count, "omitted": self.sources.omitted},
            "destinations": {
                "patterns": list(self.destinations.patterns),
                "count": self.destinations.count,
                "omitted": self.destinations.omitted,
            },
            "ports": [str(p) for p in self.ports],
            "cells": self.cells,
            "causes": [{"policy": c.policy, "edit": c.edit.value, "effect": c.kind.value} for c in self.causes],
            "unexplained": self.unexplained,
            "summary": self.summary(),
        }


@dataclass(frozen=True)
class PolicyEdit:
    """A policy whose definition differs between the two sides (by reported name)."""

    policy: str
    edit: Edit
    base_source: str | None = None
    head_source: str | None = None


@dataclass(frozen=True, eq=False)
class _PortCells:
    port: PortProtocol
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    opened: Mask
    closed: Mask


@dataclass(frozen=True)
class StepImpact:
    groups: tuple[ImpactGroup, ...]
    opened: int
    closed: int
    #: Cells only the head probes / only the base probed (topology or ports changed).
    new_cells: int = 0
    gone_cells: int = 0
    edits: tuple[PolicyEdit, ...] = ()
    #: The step has no base (a new scenario or step): every cell is new.
    new: bool = False
    _cells: tuple[_PortCells, ...] = field(default=(), compare=False, repr=False)

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.closed)

    def cells(self, change: Change) -> Iterator[Cell]:
        """Every opened (or closed) cell, port by port, for gates that check each one."""
        for port_cells in self._cells:
            mask = port_cells.opened if change is Change.OPENED else port_cells.closed
            for s, d in zip(*np.nonzero(mask), strict=True):
                yield Cell(port_cells.sources[s], port_cells.destinations[d], port_cells.port)

    def summary(self) -> str:
        if self.new:
            return f"new: {self.new_cells} cells, no base to compare with"
        text = f"{self.opened} opened, {self.closed} closed"
        if self.new_cells or self.gone_cells:
            text += f"; {self.new_cells} new and {self.gone_cells} gone cells"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "opened": self.opened,
            "closed": self.closed,
            "new_cells": self.new_cells,
            "gone_cells": self.gone_cells,
            "groups": [g.to_json() for g in self.groups],
            "edits": [
                {"policy": e.policy, "edit": e.edit.value, "base_source": e.base_source, "head_source": e.head_source}
                for e in self.edits
            ],
        }


@dataclass(frozen=True, eq=False)
class ImpactSide:
    """One side of a comparison: the model of the step's state, the ports it probes
    (None: every port some endpoint serves), whether a pod's traffic to itself is
    probed, and how to name the model's policies in reports (e.g. the Calico object
    a translated NetworkPolicy stands for)."""

    model: ReferenceModel
    ports: tuple[PortProtocol, ...] | None = None
    probe_self: bool = False
    names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def probed_ports(self) -> tuple[PortProtocol, ...]:
        return self.ports if self.ports is not None else self.model.topology.port_keys()

    def name(self, ref: str) -> str:
        return self.names.get(ref, ref)


# -- the computation ---------------------------------------------------------------------


def _definition(policy: NetworkPolicy | ClusterPolicy) -> NetworkPolicy | ClusterPolicy:
    return replace(policy, source="")  # where it is written is no part of what it does


def _all_policies(model: ReferenceModel) -> dict[str, NetworkPolicy | ClusterPolicy]:
    """The model's NetworkPolicies and cluster policies, by reference."""
    return {**{p.ref: p for p in model.policies}, **{p.ref: p for p in model.cluster_policies}}


def _edits(base: ImpactSide, head: ImpactSide) -> tuple[dict[str, Edit], tuple[PolicyEdit, ...]]:
    """Edit status of every policy of either side (by model ref), and the edits by
    reported name."""
    before = _all_policies(base.model)
    after = _all_policies(head.model)
    status: dict[str, Edit] = {}
    for ref in dict.fromkeys([*before, *after]):
        if ref not in before:
            status[ref] = Edit.ADDED
        elif ref not in after:
            status[ref] = Edit.REMOVED
        else:
            status[ref] = Edit.MODIFIED if _definition(before[ref]) != _definition(after[ref]) else Edit.UNCHANGED
    by_name: dict[str, PolicyEdit] = {}
    for ref, edit in status.items():
        if edit is Edit.UNCHANGED:
            continue
        name = head.name(ref) if ref in after else base.name(ref)
        old = before.get(ref)
        new = after.get(ref)
        previous = by_name.get(name)
        if previous is not None and previous.edit is not edit:
            edit = Edit.MODIFIED  # parts of one object added and removed: it changed
        by_name[name] = PolicyEdit(
            name,
            edit,
            old.source if old is not None else (previous.base_source if previous else None),
            new.source if new is not None else (previous.head_source if previous else None),
        )
    return status, tuple(sorted(by_name.values(), key=lambda e: e.policy))


def _environment_changed(base: ReferenceModel, head: ReferenceModel) -> bool:
    return base.topology != head.topology or base.settings != head.settings or base.addresses != head.addresses


@dataclass(frozen=True, eq=False)
class _Axis:
    """Endpoint ids of one grid axis, with their namespaces, for writing patterns."""

    ids: tuple[str, ...]
    codes: npt.NDArray[np.int64]  # namespace index per id; -1 for external hosts
    namespaces: tuple[str, ...]
    sizes: npt.NDArray[np.int64]  # ids per namespace
    members: tuple[npt.NDArray[np.intp], ...]  # positions of each namespace's ids
    external_positions: npt.NDArray[np.intp]

    @classmethod
    def of(cls, ids: Sequence[str]) -> _Axis:
        namespaces: dict[str, int] = {}
        codes = []
        for endpoint in ids:
            ns, slash, _ = endpoint.partition("/")
            codes.append(namespaces.setdefault(ns, len(namespaces)) if slash else -1)
        code_array = np.array(codes, dtype=np.int64)
        sizes = np.bincount(code_array[code_array >= 0], minlength=len(namespaces)).astype(np.int64)
        members = tuple(np.flatnonzero(code_array == code) for code in range(len(namespaces)))
        return cls(tuple(ids), code_array, tuple(namespaces), sizes, members, np.flatnonzero(code_array < 0))

    def describe(self, actual: Mask, members: Mask | None = None) -> EndpointSet:
        """``actual`` endpoints as patterns. ``members`` (a superset) may complete a
        namespace or the whole axis: endpoints whose cell is not probed (a pod's own)
        complete a pattern without being listed. A namespace is written ``ns/*`` when
        complete with at least two endpoints, a lone pod by its name."""
        members = actual if members is None else members
        count = int(actual.sum())
        actual_ns = [int(actual[m].sum()) for m in self.members]
        complete = [bool(members[m].all()) for m in self.members]
        externals = [self.ids[i] for i in self.external_positions[actual[self.external_positions]]]
        touched = sum(1 for n in actual_ns if n)
        if touched >= 2 and all(complete):
            if len(self.external_positions) and len(externals) == len(self.external_positions):
                return EndpointSet(("*",), count)
            return EndpointSet(("*/*", *externals), count)
        patterns: list[str] = []
        omitted = 0
        for code, ns in enumerate(self.namespaces):
            if not actual_ns[code]:
                continue
            positions = self.members[code]
            if complete[code] and len(positions) >= 2:
                patterns.append(f"{ns}/*")
                continue
            chosen = positions[actual[positions]]
            patterns.extend(self.ids[i] for i in chosen[:MAX_LISTED])
            omitted += max(0, len(chosen) - MAX_LISTED)
        patterns.extend(externals)
        return EndpointSet(tuple(patterns), count, omitted)


@dataclass(eq=False)
class _RawGroup:
    change: Change
    port: PortProtocol
    sources: EndpointSet
    destinations: EndpointSet
    key: tuple[object, ...]
    cells: int
    causes: set[Cause] = field(default_factory=set)
    unexplained: bool = False


@dataclass(frozen=True, eq=False)
class _View:
    """One revision's model seen through the common grid of a port."""

    side: ImpactSide
    policies: Mapping[str, NetworkPolicy]
    sources: npt.NDArray[np.intp]  # pod indices of the common sources
    destinations: npt.NDArray[np.intp]  # destination indices of the common destinations
    dest_is_pod: Mask  # which common destinations are pods
    pod_destinations: npt.NDArray[np.intp]  # pod indices of those


def _self_cells(sources: Sequence[str], destinations: Sequence[str]) -> int:
    return len(set(sources) & set(destinations))


def _grid_cells(sources: Sequence[str], destinations: Sequence[str], probe_self: bool) -> int:
    return len(sources) * len(destinations) - (0 if probe_self else _self_cells(sources, destinations))


def compute_impact(base: ImpactSide | None, head: ImpactSide) -> StepImpact:
    """The impact of going from ``base`` to ``head`` on one step."""
    head_ports = head.probed_ports()
    head_sources = [p.id for p in head.model.pods]
    if base is None:
        total = sum(
            _grid_cells(head_sources, [ep.id for ep in head.model.topology.serving(k)], head.probe_self) for k in head_ports
        )
        edits = tuple(
            PolicyEdit(name, Edit.ADDED, None, p.source)
            for name, p in sorted({head.name(ref): p for ref, p in _all_policies(head.model).items()}.items())
        )
        return StepImpact((), 0, 0, new_cells=total, edits=edits, new=True)
    base_ports = base.probed_ports()
    status, edits = _edits(base, head)
    candidates = (
        list(status)
        if _environment_changed(base.model, head.model)
        else [r for r, e in status.items() if e is not Edit.UNCHANGED]
    )
    base_pod_ids = {p.id for p in base.model.pods}
    sources = [i for i in head_sources if i in base_pod_ids]
    source_axis = _Axis.of(sources)
    new_cells = gone_cells = 0
    raw: list[_RawGroup] = []
    port_cells: list[_PortCells] = []
    opened_total = closed_total = 0
    base_sources = [p.id for p in base.model.pods]
    base_policies = {p.ref: p for p in base.model.policies}
    head_policies = {p.ref: p for p in head.model.policies}
    for key in sorted(set(head_ports) | set(base_ports)):
        head_dests = [ep.id for ep in head.model.topology.serving(key)] if key in head_ports else []
        base_dests = [ep.id for ep in base.model.topology.serving(key)] if key in base_ports else []
        base_dest_ids = set(base_dests)
        dests = [d for d in head_dests if d in base_dest_ids]
        both_self = base.probe_self and head.probe_self
        common = _grid_cells(sources, dests, both_self)
        new_cells += _grid_cells(head_sources, head_dests, head.probe_self) - common if head_dests else 0
        gone_cells += _grid_cells(base_sources, base_dests, base.probe_self) - common if base_dests else 0
        if not dests or not sources:
            continue
        views = [_view(side, by_ref, sources, dests) for side, by_ref in ((base, base_policies), (head, head_policies))]
        allowed_b = base.model.allowed_matrix(key)[np.ix_(views[0].sources, views[0].destinations)]
        allowed_h = head.model.allowed_matrix(key)[np.ix_(views[1].sources, views[1].destinations)]
        probed = np.ones(allowed_h.shape, bool)
        if not both_self:
            dest_pos = {d: j for j, d in enumerate(dests)}
            for i, s in enumerate(sources):
                j = dest_pos.get(s)
                if j is not None:
                    probed[i, j] = False
        opened = allowed_h & ~allowed_b & probed
        closed = allowed_b & ~allowed_h & probed
        opened_total += int(opened.sum())
        closed_total += int(closed.sum())
        if not opened.any() and not closed.any():
            continue
        port_cells.append(_PortCells(key, tuple(sources), tuple(dests), opened, closed))
        dest_axis = _Axis.of(dests)
        gid = np.full(opened.shape, -1, dtype=np.int64)
        for change, mask in ((Change.OPENED, opened), (Change.CLOSED, closed)):
            raw.extend(_group(change, key, mask, probed, source_axis, dest_axis, gid, len(raw)))
        explained = np.zeros(opened.shape, bool)
        _attribute(key, views, opened, closed, gid, raw, candidates, status, explained)
        for group_id in np.unique(gid[(opened | closed) & ~explained]):
            raw[int(group_id)].unexplained = True
    return StepImpact(_merge(raw), opened_total, closed_total, new_cells, gone_cells, edits, _cells=tuple(port_cells))


def _view(side: ImpactSide, policies: Mapping[str, NetworkPolicy], sources: Sequence[str], dests: Sequence[str]) -> _View:
    model = side.model
    is_pod = np.array([d in model.pod_index for d in dests], dtype=bool)
    return _View(
        side,
        policies,
        np.array([model.pod_index[s] for s in sources], dtype=np.intp),
        np.array([model.dest_index[d] for d in dests], dtype=np.intp),
        is_pod,
        np.array([model.pod_index[d] for d, pod in zip(dests, is_pod, strict=True) if pod], dtype=np.intp),
    )


def _group(
    change: Change,
    key: PortProtocol,
    changed: Mask,
    probed: Mask,
    source_axis: _Axis,
    dest_axis: _Axis,
    gid: npt.NDArray[np.int64],
    first_id: int,
) -> list[_RawGroup]:
    """Destinations whose changed sources (unprobed cells counting as members) are the
    same set form one group."""
    columns = np.flatnonzero(changed.any(axis=0))
    if not len(columns):
        return []
    members = changed[:, columns] | ~probed[:, columns]
    packed = np.packbits(members, axis=0).T
    _, inverse = np.unique(packed, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups: list[_RawGroup] = []
    for g in range(int(inverse.max()) + 1):
        cols = columns[inverse == g]
        cells = changed[:, cols]
        source_members = members[:, int(np.flatnonzero(inverse == g)[0])]
        dest_members = np.zeros(len(dest_axis.ids), bool)
        dest_members[cols] = True
        actual: Mask = np.asarray(cells.any(axis=1))
        sources = source_axis.describe(actual, source_members)
        dests = dest_axis.describe(dest_members)
        ident: tuple[object, ...] = (
            change,
            sources.patterns,
            dests.patterns,
            frozenset(np.flatnonzero(actual).tolist()) if sources.omitted else (),
            frozenset(dest_axis.ids[c] for c in cols) if dests.omitted else (),
        )
        block = gid[:, cols]
        block[cells] = first_id + len(groups)
        gid[:, cols] = block
        groups.append(_RawGroup(change, key, sources, dests, ident, int(cells.sum())))
    return groups


def _admitted(blocks: tuple[tuple[Mask, Mask], ...], rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]) -> Mask:
    """A policy's admission on ``rows x cols`` (indices into the model's axes)."""
    out = np.zeros((len(rows), len(cols)), bool)
    for row_mask, col_mask in blocks:
        r = row_mask[rows]
        if r.any():
            out[r] |= col_mask[cols]
    return out


def _attribute(
    key: PortProtocol,
    views: Sequence[_View],
    opened: Mask,
    closed: Mask,
    gid: npt.NDArray[np.int64],
    raw: list[_RawGroup],
    candidates: Sequence[str],
    status: Mapping[str, Edit],
    explained: Mask,
) -> None:
    """Blame the candidates for the cells whose egress or ingress side flipped."""
    base, head = views
    pod_columns = np.flatnonzero(head.dest_is_pod)
    for direction in (PolicyType.EGRESS, PolicyType.INGRESS):
        if direction is PolicyType.EGRESS:
            # Rows are sources, columns destinations.
            o, c, g = opened, closed, gid
            subjects = (base.sources, head.sources)
            others = (base.destinations, head.destinations)
            isolated = tuple(v.side.model.egress_isolated[v.sources] for v in views)
            side = tuple(v.side.model.sides(key)[1][np.ix_(v.sources, v.destinations)] for v in views)
        else:
            if not len(pod_columns):
                continue
            # Rows are destination pods, columns sources.
            o, c, g = opened[:, pod_columns].T, closed[:, pod_columns].T, gid[:, pod_columns].T
            subjects = (base.pod_destinations, head.pod_destinations)
            others = (base.sources, head.sources)
            isolated = tuple(v.side.model.ingress_isolated[v.pod_destinations] for v in views)
            side = tuple(v.side.model.sides(key)[0][np.ix_(v.pod_destinations, v.sources)] for v in views)
        flips = _Flips(o & ~side[0], c & ~side[1], g, subjects, others, (isolated[0], isolated[1]))
        if not flips.opened.any() and not flips.closed.any():
            continue
        found = np.zeros(o.shape, bool)
        cluster = [ref for ref in candidates if any(ref in v.side.model.tiers.by_ref for v in views)]
        for ref in candidates:
            if ref not in cluster:
                _blame(ref, direction, key, views, flips, raw, status, found)
        if cluster:
            _blame_tiers(cluster, direction, key, views, flips, raw, status, found)
        if direction is PolicyType.EGRESS:
            explained |= found
        else:
            explained[:, pod_columns] |= found.T


@dataclass(frozen=True, eq=False)
class _Flips:
    """The cells of one side (egress or ingress) that flipped, in that side's
    orientation: rows are the pods whose side it is, columns the other ends."""

    opened: Mask
    closed: Mask
    gid: npt.NDArray[np.int64]
    subjects: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]  # row indices, base and head
    others: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]  # column indices, base and head
    isolated: tuple[Mask, Mask]


def _blame(
    ref: str,
    direction: PolicyType,
    key: PortProtocol,
    views: Sequence[_View],
    flips: _Flips,
    raw: list[_RawGroup],
    status: Mapping[str, Edit],
    found: Mask,
) -> None:
    """Add ``ref`` to the causes of the groups whose flipped cells it explains."""
    selected: list[Mask] = []
    blocks: list[tuple[tuple[Mask, Mask], ...]] = []
    for view, rows in zip(views, flips.subjects, strict=True):
        policy = view.policies.get(ref)
        if policy is None or direction not in policy.policy_types:
            selected.append(np.zeros(len(rows), bool))
            blocks.append(())
            continue
        selected.append(view.side.model.selected(ref)[rows])
        admission: Admission = view.side.model.admission(ref, key)
        blocks.append(admission.egress if direction is PolicyType.EGRESS else admission.ingress)
    touched = (selected[0] | selected[1]) & (flips.opened.any(axis=1) | flips.closed.any(axis=1))
    if not touched.any():
        return
    rows = np.flatnonzero(touched)
    adm_b, adm_h = (
        _admitted(b, subject_rows[rows], other_cols)
        for b, subject_rows, other_cols in zip(blocks, flips.subjects, flips.others, strict=True)
    )
    sel_b, sel_h = selected[0][rows], selected[1][rows]
    iso_b, iso_h = flips.isolated[0][rows], flips.isolated[1][rows]
    fo, fc, g = flips.opened[rows], flips.closed[rows], flips.gid[rows]
    explanations = (
        (CauseKind.STOPS_ISOLATING, fo & (~iso_h & sel_b & ~sel_h)[:, None]),
        (CauseKind.ADMITS, fo & iso_h[:, None] & adm_h & ~adm_b),
        (CauseKind.ISOLATES, fc & (~iso_b & sel_h & ~sel_b)[:, None]),
        (CauseKind.STOPS_ADMITTING, fc & iso_b[:, None] & adm_b & ~adm_h),
    )
    edit = status[ref]
    name = views[0].side.name(ref) if edit is Edit.REMOVED else views[1].side.name(ref)
    for kind, cells in explanations:
        if not cells.any():
            continue
        found[rows] |= cells
        cause = Cause(name, kind, edit)
        for group_id in np.unique(g[cells]):
            raw[int(group_id)].causes.add(cause)


def _blame_tiers(
    refs: Sequence[str],
    direction: PolicyType,
    key: PortProtocol,
    views: Sequence[_View],
    flips: _Flips,
    raw: list[_RawGroup],
    status: Mapping[str, Edit],
    found: Mask,
) -> None:
    """Add the edited cluster policies ``refs`` to the causes of the groups whose
    flipped side the tiers decide differently: an Admin Accept or Deny, or a
    Baseline Deny of a pod no NetworkPolicy isolates, that appeared or went, put
    down to each edited cluster policy selecting the pod (in either revision)."""
    accepted: list[Mask] = []
    denied: list[Mask] = []
    for view, rows, cols, isolated in zip(views, flips.subjects, flips.others, flips.isolated, strict=True):
        tiers = view.side.model.tiers
        admin_accept, admin_deny = tiers.decide(Tier.ADMIN, direction, key)
        _, baseline_deny = tiers.decide(Tier.BASELINE, direction, key)
        grid = np.ix_(rows, cols)
        accept = admin_accept[grid]
        accepted.append(accept)
        denied.append(admin_deny[grid] | (~isolated[:, None] & baseline_deny[grid] & ~accept))
    fo, fc = flips.opened, flips.closed
    explanations = (
        (CauseKind.STOPS_DENYING, fo & denied[0] & ~denied[1]),
        (CauseKind.ADMITS, fo & accepted[1] & ~accepted[0]),
        (CauseKind.DENIES, fc & denied[1] & ~denied[0]),
        (CauseKind.STOPS_ADMITTING, fc & accepted[0] & ~accepted[1]),
    )
    for ref in refs:
        selected = np.zeros(len(flips.subjects[0]), bool)
        for view, rows in zip(views, flips.subjects, strict=True):
            policy = view.side.model.tiers.by_ref.get(ref)
            if policy is not None and policy.rules(direction):
                selected |= view.side.model.pod_set(policy.subject)[rows]
        if not selected.any():
            continue
        edit = status[ref]
        name = views[0].side.name(ref) if edit is Edit.REMOVED else views[1].side.name(ref)
        for kind, cells in explanations:
            mine = cells & selected[:, None]
            if not mine.any():
                continue
            found |= mine
            cause = Cause(name, kind, edit)
            for group_id in np.unique(flips.gid[mine]):
                raw[int(group_id)].causes.add(cause)


def _merge(raw: Sequence[_RawGroup]) -> tuple[ImpactGroup, ...]:
    """Groups that read the same on several ports become one."""
    merged: dict[tuple[object, ...], list[_RawGroup]] = {}
    for group in raw:
        merged.setdefault(group.key, []).append(group)
    out = []
    for parts in merged.values():
        first = parts[0]
        causes: set[Cause] = set().union(*(p.causes for p in parts))
        out.append(
            ImpactGroup(
                first.change,
                first.sources,
                first.destinations,
                tuple(sorted(p.port for p in parts)),
                sum(p.cells for p in parts),
                tuple(sorted(causes, key=Cause.sort_key)),
                any(p.unexplained for p in parts),
            )
        )
    order = {Change.OPENED: 0, Change.CLOSED: 1}
    return tuple(sorted(out, key=lambda g: (order[g.change], -g.cells, g.destinations.patterns, g.sources.patterns, g.ports)))


# -- the changed lines of policy files ---------------------------------------------------

_DOCUMENT = re.compile(r" \(document \d+\)\Z")


def source_file(policy_source: str) -> str:
    """The file a policy was read from (the loader adds ``(document N)`` for
    multi-document files)."""
    return _DOCUMENT.sub("", policy_source)


@dataclass(frozen=True)
class FileDiff:
    """A unified diff of a policy file between the two sides, bounded: at most
    :data:`MAX_DIFF_LINES` lines are kept; ``truncated`` counts the rest."""

    base_path: str | None
    head_path: str | None
    lines: tuple[str, ...]
    added: int
    removed: int
    truncated: int = 0
    #: The file is too long to diff; only that it changed is known.
    too_large: bool = False

    def text(self) -> str:
        tail = [f"... {self.truncated} more lines"] if self.truncated else []
        if self.too_large:
            tail = [f"(too large to show: more than {MAX_DIFF_INPUT_LINES} lines)"]
        return "\n".join([*self.lines, *tail])


def file_diff(
    base_path: str | None,
    base_text: str | None,
    head_path: str | None,
    head_text: str | None,
    max_lines: int = MAX_DIFF_LINES,
    context: int = 3,
) -> FileDiff:
    """The changed lines of one file; a side that is None is an absent file."""
    old = (base_text or "").splitlines()
    new = (head_text or "").splitlines()
    if len(old) > MAX_DIFF_INPUT_LINES or len(new) > MAX_DIFF_INPUT_LINES:
        return FileDiff(base_path, head_path, (), 0, 0, too_large=True)
    diff = difflib.unified_diff(
        old,
        new,
        fromfile=f"a/{base_path}" if base_path is not None and base_text is not None else "/dev/null",
        tofile=f"b/{head_path}" if head_path is not None and head_text is not None else "/dev/null",
        n=context,
        lineterm="",
    )
    kept: list[str] = []
    added = removed = total = 0
    for line in diff:
        total += 1
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
        if len(kept) < max_lines:
            kept.append(line)
    return FileDiff(base_path, head_path, tuple(kept), added, removed, total - len(kept))


def policy_diffs(
    edits: Iterable[PolicyEdit],
    read_base: Callable[[str], str | None],
    read_head: Callable[[str], str | None],
) -> dict[tuple[str | None, str | None], FileDiff]:
    """The diff of each file an edited policy comes from, keyed by (base file, head
    file); ``read_*`` return a file's text on that side, or None when it is absent.
    Inline policies (written in the scenario itself) show as the scenario's diff."""
    out: dict[tuple[str | None, str | None], FileDiff] = {}
    for edit in edits:
        base_file = source_file(edit.base_source) if edit.base_source else None
        head_file = source_file(edit.head_source) if edit.head_source else None
        pair = (base_file, head_file)
        if pair in out:
            continue
        out[pair] = file_diff(
            base_file,
            read_base(base_file) if base_file else None,
            head_file,
            read_head(head_file) if head_file else None,
        )
    return out
