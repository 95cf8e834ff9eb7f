"""``--update-expectations``: a scenario's intent rewritten with what a run observed,
as snapshot tools do, so that the diff of the scenario file is the review.

The file is edited in place with ruamel.yaml's round trip, which keeps its
comments, key order and quoting; only what differs changes:

* rules: one rule per wrong cell is appended to the step's rules (the last matching
  rule wins, so it overrides what came before): ``{from: x/a, to: y/b, port: 80/TCP,
  result: blocked}``;
* matrix: each table with a wrong cell is written again, with the observed symbol in
  those cells and the rows and columns in the order the harness probes them;
* ``model: true`` expects the model by definition: nothing to write.

A scenario marked ``xfail`` documents its wrong cells by hand and is left alone; an
observation that is no intent (an error, a wrong responder, unsupported) is never
written, and is reported instead.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString

from harness.core.errors import ScenarioError
from harness.core.files import write_atomic
from harness.core.matrix import Cell, Observation, Outcome, ReachabilityMatrix, compare, render_grid
from harness.core.topology import PortProtocol
from harness.scenario.spec import RESULTS, ExpectationForm, Scenario


@dataclass(frozen=True)
class Update:
    """What was done to one scenario file."""

    path: Path
    #: Steps whose expectation was rewritten, with how many cells each.
    changed: Mapping[str, int] = field(default_factory=dict)
    #: Why something was not written (an xfail scenario, a cell observed as an error).
    skipped: tuple[str, ...] = ()

    @property
    def written(self) -> bool:
        return bool(self.changed)

    def summary(self) -> str:
        if not self.changed:
            why = "; ".join(self.skipped) or "the observations match the expectations"
            return f"{self.path}: not updated ({why})"
        steps = ", ".join(f"{step} ({n} cell(s))" for step, n in self.changed.items())
        more = f"; {'; '.join(self.skipped)}" if self.skipped else ""
        return f"{self.path}: expectations updated in {steps}{more}"


def _yaml() -> YAML:
    yaml = YAML()  # round trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a line the author wrote on one
    # The library's style (docs/scenario-format.md): lists indented under their key.
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _expect_node(doc: Any, index: int, several: bool) -> Any:
    if several:
        return doc["steps"][index]["expect"]
    return doc["expect"]


def _flow(mapping: dict[str, str]) -> CommentedMap:
    node = CommentedMap(mapping)
    node.fa.set_flow_style()
    return node


def update_expectations(scenario: Scenario, observed: Mapping[str, ReachabilityMatrix]) -> Update:
    """Rewrite ``scenario``'s file so that each step's expectation is what was
    ``observed`` (step name → matrix)."""
    path = scenario.path
    if scenario.xfail is not None:
        return Update(path, skipped=("an expected failure documents its wrong cells by hand",))
    yaml = _yaml()
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(str(path), "", f"cannot read it to update its expectations: {err.strerror or err}") from None
    several = "steps" in doc
    changed: dict[str, int] = {}
    skipped: list[str] = []
    for index, (step, plan) in enumerate(zip(scenario.steps, scenario.plans, strict=True)):
        seen = observed.get(step.name)
        if seen is None or step.expect.form is ExpectationForm.MODEL:
            continue
        comparison = compare(plan.expected, seen)
        cells: dict[Cell, Outcome] = {}
        for mismatch in comparison.iter_mismatches():
            outcome = mismatch.observed.outcome
            if outcome not in RESULTS:
                skipped.append(f"{mismatch.cell} observed {mismatch.observed.describe()}, which is no intent")
                continue
            cells[mismatch.cell] = outcome
        if not cells:
            continue
        node = _expect_node(doc, index, several)
        if step.expect.form is ExpectationForm.RULES:
            rules = node.get("rules")
            if rules is None:
                rules = node["rules"] = CommentedSeq()
            for cell, outcome in sorted(cells.items()):
                rules.append(
                    _flow({"from": cell.source, "to": cell.destination, "port": str(cell.port), "result": outcome.value})
                )
        else:
            updated = plan.expected.with_cells({cell: Observation(outcome) for cell, outcome in cells.items()})
            for port in sorted({cell.port for cell in cells}):
                node["matrix"][_table_key(node["matrix"], port)] = LiteralScalarString(_table(updated, port))
        changed[step.name] = len(cells)
    if changed:
        out = io.StringIO()
        yaml.dump(doc, out)
        try:
            write_atomic(path, out.getvalue())
        except OSError as err:
            raise ScenarioError(str(path), "", f"cannot write its updated expectations: {err.strerror or err}") from None
    return Update(path, changed, tuple(skipped))


def _table_key(tables: Any, port: PortProtocol) -> Any:
    """The key the file gives the table of ``port`` (``80/TCP``, or ``80``)."""
    for key in tables:
        try:
            if PortProtocol.parse(str(key)) == port:
                return key
        except Exception:  # noqa: BLE001 - a key the loader already refused cannot be here
            continue
    return str(port)


def _table(matrix: ReachabilityMatrix, port: PortProtocol) -> str:
    return render_grid("", matrix.sources, matrix.columns(port), lambda s, d: matrix.symbol(s, d, port)).split("\n", 1)[1] + "\n"
