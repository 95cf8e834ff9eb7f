"""Command line: ``python -m harness explain`` and ``python -m harness validate``.

``explain`` is the reproduce command of the model backend: it prints the reference
model's verdict for one cell of a scenario step and the policies behind it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.core.addressing import plan_addresses
from harness.core.errors import HarnessError
from harness.core.state import ClusterState
from harness.core.topology import PortProtocol
from harness.model import ReferenceModel
from harness.scenario import Scenario, load_scenario


def _state_at(scenario: Scenario, step_name: str | None) -> ClusterState:
    state = ClusterState(scenario.topology)
    names = [s.name for s in scenario.steps]
    if step_name is not None and step_name not in names:
        raise HarnessError(f"{scenario.path}: no step {step_name!r}; steps are {', '.join(names)}")
    for step in scenario.steps:
        state = state.after(step)
        if step.name == (step_name or names[-1]):
            break
    return state


def explain(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    state = _state_at(scenario, args.step)
    topology = state.topology
    for endpoint in (args.source, args.destination):
        topology.endpoint(endpoint)  # UnknownName lists the declared endpoints
    if "/" not in args.source:
        raise HarnessError(f"{args.source!r} is an external host; sources are pods")
    port = PortProtocol.parse(args.port)
    model = ReferenceModel(
        topology,
        state.policies.values(),
        plan_addresses(topology),
        scenario.settings.model,
        state.cluster_policies.values(),
    )
    allowed = model.allowed(args.source, args.destination, port)
    print(f"{args.source} → {args.destination}:{port} is {'allowed' if allowed else 'blocked'} by the reference model")
    if not allowed:
        print(f"  because: {model.explain(args.source, args.destination, port)}")
    policies = ", ".join(state.refs) or "none"
    print(f"  policies in force: {policies}")
    return 0


def validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            scenario = load_scenario(path)
        except HarnessError as err:
            failed += 1
            print(f"INVALID {err}")
        else:
            print(f"ok      {path}: {scenario.name} ({len(scenario.steps)} step(s))")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="netpol-harness tools")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="the reference model's verdict for one cell of a scenario")
    ex.add_argument("scenario", help="scenario file")
    ex.add_argument("source", help="source pod, namespace/pod")
    ex.add_argument("destination", help="destination pod (namespace/pod) or external host")
    ex.add_argument("port", help="port/protocol such as 80/TCP")
    ex.add_argument("--step", help="step name (default: the last step)")
    ex.set_defaults(func=explain)
    va = sub.add_parser("validate", help="check scenario files without running them")
    va.add_argument("files", nargs="+", help="scenario files")
    va.set_defaults(func=validate)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
