"""The scenario format: YAML files read with field paths, validated, and turned
into what each step runs (see docs/scenario-format.md)."""

from harness.scenario.loader import (
    EndpointMatcher,
    EndpointPattern,
    EndpointSelector,
    Expectation,
    ExpectationForm,
    ExpectRule,
    PortPattern,
    Scenario,
    ScenarioSettings,
    Step,
    TextMatrix,
    load_scenario,
    parse_expectation,
    parse_scenario,
    parse_topology,
    probed_ports,
)

__all__ = [
    "EndpointMatcher",
    "EndpointPattern",
    "EndpointSelector",
    "ExpectRule",
    "Expectation",
    "ExpectationForm",
    "PortPattern",
    "Scenario",
    "ScenarioSettings",
    "Step",
    "TextMatrix",
    "load_scenario",
    "parse_expectation",
    "parse_scenario",
    "parse_topology",
    "probed_ports",
]
