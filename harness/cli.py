"""Command line: ``python -m harness explain``, ``validate``, ``init``, ``constraints``,
``impact`` and ``cleanup``.

``explain`` is the reproduce command of the model backend: it prints the reference
model's verdict for one cell of a scenario step, the policy rule that admits it or
the policies that isolate it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from harness.backends import BACKENDS, backend_module, unavailable_message
from harness.backends.base import Options
from harness.core.addressing import plan_addresses
from harness.core.errors import BackendUnavailable, HarnessError
from harness.core.files import write_atomic
from harness.core.matrix import Cell, CellSet
from harness.core.plan import StepPlan
from harness.core.topology import PortProtocol
from harness.engine.change import ImpactReport, ScenarioChange, confirm, removed_scenarios, scenario_change, scenario_files
from harness.engine.change import Status as ChangeStatus
from harness.engine.constraint_results import applied_nowhere
from harness.engine.constraints import check_scenario
from harness.engine.pipeline import Pipeline
from harness.model import model_of
from harness.reporting.impact import render_markdown, render_text
from harness.reporting.markdown import STEP_SUMMARY_ENV
from harness.scenario import Scenario, load_scenario
from harness.scenario.constraints import load_constraints
from harness.scenario.files import SCENARIO_SUFFIXES, looks_like_scenario
from harness.scenario.sources import GitRevision, WorkingTree
from harness.scenario.starter import starter_scenario


def _plan(scenario: Scenario, step_name: str | None) -> StepPlan:
    names = [p.name for p in scenario.plans]
    if step_name is None:
        return scenario.plans[-1]
    for plan in scenario.plans:
        if plan.name == step_name:
            return plan
    raise HarnessError(f"{scenario.path}: no step {step_name!r}; steps are {', '.join(names)}")


def explain(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    plan = _plan(scenario, args.step)
    topology = plan.topology
    topology.endpoint(args.source)  # UnknownName lists the declared endpoints
    if topology.service_destination(args.destination) is None:
        topology.endpoint(args.destination)
    if "/" not in args.source:
        raise HarnessError(f"{args.source!r} is an external host; sources are pods")
    port = PortProtocol.parse(args.port)
    model = model_of(plan.state, plan_addresses(scenario.topology), plan.settings)
    outcome = model.reachability(CellSet.from_cells([Cell(args.source, args.destination, port)]))
    verdict = outcome[Cell(args.source, args.destination, port)].outcome.value
    print(f"{args.source} → {args.destination}:{port} is {verdict} by the reference model")
    print(f"  because: {model.explain(args.source, args.destination, port)}")
    policies = ", ".join(plan.state.refs) or "none"
    print(f"  policies in force: {policies}")
    return 0


def validate(args: argparse.Namespace) -> int:
    failed = 0
    names: dict[str, str] = {}
    for path in _scenario_files(args.files):
        try:
            scenario = load_scenario(path)
        except HarnessError as err:
            failed += 1
            print(f"INVALID {err}")
            continue
        if scenario.name in names:
            failed += 1
            print(f"INVALID {path}: name: scenario name {scenario.name!r} is also used by {names[scenario.name]}")
            continue
        names[scenario.name] = str(path)
        print(f"ok      {path}: {scenario.name} ({len(scenario.steps)} step(s), {scenario.probes} probe(s))")
        for note in scenario.notes:
            print(f"        {note}")
    return 1 if failed else 0


def init(args: argparse.Namespace) -> int:
    """Print a first scenario for the manifests given (see harness.scenario.starter)."""
    scenario_dir = (
        Path(args.scenario_dir) if args.scenario_dir else (Path("scenarios") if Path("scenarios").is_dir() else Path("."))
    )
    text = starter_scenario(
        [Path(p) for p in args.manifests],
        [Path(p) for p in args.policies],
        scenario_dir,
        WorkingTree(),
        args.name,
    )
    sys.stdout.write(text)
    return 0


def _scenario_files(paths: Sequence[str]) -> list[Path]:
    """Files as given; a directory stands for the scenario files in it, at any depth."""
    out: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.y*ml") if p.suffix in SCENARIO_SUFFIXES and looks_like_scenario(p))
        else:
            out.append(path)
    return out


def constraints(args: argparse.Namespace) -> int:
    """Every constraint of a file on every step of the scenarios, by the reference
    model: 0 when every one holds and each applies somewhere, 1 when one is violated
    or applies to no step of any scenario, 2 on a file that cannot be read."""
    constraint_set = load_constraints(args.file)
    paths = _scenario_files(args.scenarios)
    if not paths:
        raise HarnessError(f"no scenario file in {', '.join(args.scenarios)}")
    checks = []
    invalid = 0
    for path in paths:
        try:
            scenario = load_scenario(path)
        except HarnessError as err:
            invalid += 1
            print(f"INVALID {err}")
            continue
        check = check_scenario(constraint_set, scenario)
        checks.append(check)
        print(f"scenario {scenario.name} ({path}): {check.reason() or 'every constraint that applies holds'}")
        for i, plan in enumerate(scenario.plans):
            print(f"  step {plan.name}:")
            for result in check.results:
                step = result.steps[i]
                if not step.applied:
                    print(f"    not applicable  {result.name}")
                elif step.violations:
                    print(f"    VIOLATED        {result.name}: {step.model.count} of {step.model.checked} cell(s)")
                else:
                    print(f"    held            {result.name} ({step.model.checked} cell(s))")
        text = check.render(scenario.name)
        if text:
            print(textwrap.indent(text, "  "))
    if invalid:
        print(f"error: {invalid} scenario file(s) cannot be read", file=sys.stderr)
        return 2
    nowhere = applied_nowhere(checks)
    for name in nowhere:
        print(
            f"error: constraint {name} applies to no step of the {len(checks)} scenario(s): it tests nothing",
            file=sys.stderr,
        )
    violated = [c for c in checks if c.violated]
    print(
        f"{len(constraint_set)} constraint(s) of {constraint_set.source} on {len(checks)} scenario(s): "
        f"{len(violated)} scenario(s) violate one"
    )
    return 1 if violated or nowhere else 0


def impact(args: argparse.Namespace) -> int:
    """The cells each scenario's change since ``--base`` opens and closes."""
    base = GitRevision(args.base)
    paths = [Path(p) for p in (args.paths or ["scenarios"])]
    files = scenario_files(paths)
    pipeline = _probing_pipeline(args.backend)
    changes = []
    try:
        for path in files:
            try:
                head = load_scenario(path)
            except HarnessError as err:
                changes.append(ScenarioChange(str(path), path.stem, ChangeStatus.ERROR, args.base, error=str(err)))
                continue
            change = scenario_change(path, base, head, args.base)
            if pipeline is not None and change.status in (ChangeStatus.CHANGED, ChangeStatus.NEW):
                change = confirm(change, pipeline.run_scenario(head))
            changes.append(change)
    finally:
        if pipeline is not None:
            pipeline.backend.close()
    changes += removed_scenarios(paths, base, files)
    report = ImpactReport(args.base, tuple(changes))
    print(render_text(report), end="")
    markdown = render_markdown(report)
    for target in (args.impact_markdown, os.environ.get(STEP_SUMMARY_ENV)):
        if target:
            _write(Path(target), markdown, append=target != args.impact_markdown)
    if args.impact_json:
        _write(Path(args.impact_json), json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    if report.errors:
        return 1
    if args.fail_on_opened and report.undeclared:
        print(f"error: {report.undeclared} opening(s) no expectation declares (--fail-on-opened)", file=sys.stderr)
        return 1
    return 0


def _probing_pipeline(name: str) -> Pipeline | None:
    """The pipeline of ``--backend``, when it probes (the model needs none: the
    impact is the model's already)."""
    if name == "model":
        return None
    try:
        backend = backend_module(name).create(Options(), progress=lambda message: print(f"netpol: {message}", file=sys.stderr))
    except BackendUnavailable as err:
        raise HarnessError(unavailable_message(name, err)) from None
    return Pipeline(backend)


def _write(path: Path, text: str, append: bool = False) -> None:
    try:
        if append:
            with path.open("a", encoding="utf-8") as out:
                out.write(text)
        else:
            write_atomic(path, text)
    except OSError as err:
        raise HarnessError(f"cannot write {path}: {err.strerror or err}") from None


def cleanup(args: argparse.Namespace) -> int:
    """Remove the emulated networks kept with --keep-network (and leftovers of dead runs)."""
    from harness.backends import emulated

    removed = emulated.cleanup()
    print(f"removed {len(removed)} network namespace(s) of emulated networks" if removed else "nothing to remove")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="netpol-harness tools")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="the reference model's verdict for one cell of a scenario, and why")
    ex.add_argument("scenario", help="scenario file")
    ex.add_argument("source", help="source pod, namespace/pod")
    ex.add_argument("destination", help="destination pod (namespace/pod) or external host")
    ex.add_argument("port", help="port/protocol such as 80/TCP")
    ex.add_argument("--step", help="step name (default: the last step)")
    ex.set_defaults(func=explain)
    va = sub.add_parser("validate", help="check scenario files without running them")
    va.add_argument("files", nargs="+", help="scenario files, or directories of them")
    va.set_defaults(func=validate)
    co = sub.add_parser(
        "constraints",
        help="check scenarios against a constraints file by the reference model, without pytest",
        description="Every constraint of FILE (docs/constraints.md) on every step of every scenario, by the "
        "reference model. Exit 0 when every constraint holds and applies to some step, 1 when one is violated "
        "or applies to none, 2 when a file cannot be read.",
    )
    co.add_argument("file", metavar="FILE", help="the constraints file")
    co.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario files, or directories of them")
    co.set_defaults(func=constraints)
    im = sub.add_parser(
        "impact",
        help="the cells a change opens and closes, scenario by scenario, against a git revision",
        description="For every scenario and step, the reachability with the scenario and its policy files as "
        "they are at REF (read with git, nothing checked out) against the working tree, by the reference model; "
        "with --backend emulated or kind the working tree's state is also probed, to confirm the cells with real traffic.",
    )
    im.add_argument("--base", required=True, metavar="REF", help="the git revision to compare with (a branch, tag or commit)")
    im.add_argument("paths", nargs="*", metavar="SCENARIO-OR-DIR", help="scenario files or directories (default: scenarios)")
    im.add_argument("--impact-markdown", metavar="FILE", help="also write the report as Markdown, for a pull-request comment")
    im.add_argument("--impact-json", metavar="FILE", help="also write the report as JSON")
    im.add_argument(
        "--fail-on-opened",
        action="store_true",
        help="exit 1 when the change opens a path that no expectation of its scenario declares allowed",
    )
    im.add_argument(
        "--backend", choices=sorted(BACKENDS), default="model", help="probe the working tree's state on this backend too"
    )
    im.set_defaults(func=impact)
    cl = sub.add_parser("cleanup", help="remove emulated networks kept with --keep-network, and leftovers of dead runs")
    cl.set_defaults(func=cleanup)
    it = sub.add_parser(
        "init",
        help="print a first scenario for your manifests "
        "(python -m harness init deploy/ --policies netpol/ > scenarios/my-app.yaml)",
    )
    it.add_argument("manifests", nargs="+", help="manifest files or directories (Deployments, Services, Namespaces...)")
    it.add_argument("--policies", action="append", default=[], metavar="PATH", help="NetworkPolicy files or directories")
    it.add_argument("--name", help="the scenario's name (default: the first manifest directory's name)")
    it.add_argument(
        "--scenario-dir",
        help="where the scenario will be saved, for the paths it writes (default: scenarios/ if it exists, else .)",
    )
    it.set_defaults(func=init)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
