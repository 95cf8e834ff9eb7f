"""The scenario format: YAML files read with field paths, validated, and turned
into what each step runs (see docs/scenario-format.md)."""

from harness.scenario.loader import load_scenario, parse_expectation, parse_manifest, parse_scenario, parse_topology
from harness.scenario.plans import parse_cell, plan_step, plan_steps, probed_ports
from harness.scenario.spec import (
    EndpointMatcher,
    EndpointPattern,
    EndpointSelector,
    Expectation,
    ExpectationForm,
    ExpectedFailure,
    ExpectRule,
    PortPattern,
    Scenario,
    ScenarioSettings,
    Step,
    TextMatrix,
)

__all__ = [
    "EndpointMatcher",
    "EndpointPattern",
    "EndpointSelector",
    "ExpectRule",
    "Expectation",
    "ExpectationForm",
    "ExpectedFailure",
    "PortPattern",
    "Scenario",
    "ScenarioSettings",
    "Step",
    "TextMatrix",
    "load_scenario",
    "parse_cell",
    "parse_expectation",
    "parse_manifest",
    "parse_scenario",
    "parse_topology",
    "plan_step",
    "plan_steps",
    "probed_ports",
]
