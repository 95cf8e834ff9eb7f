"""Hostile YAML cannot take a run down: alias bombs, deep nesting, huge files and odd
metadata end in the harness's own error, naming the file, within seconds and in
bounded memory; and whatever loads is run and reported without reports growing
with the input.

The fuzz test drives the whole path a run takes, in process: load the scenario and
its policy files, run it on the model backend, judge it, record it and write the
report directory (JSON, Markdown, HTML, the terminal summary)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.backends.model import ModelBackend
from harness.core.errors import HarnessError, ScenarioError
from harness.engine.pipeline import Pipeline
from harness.engine.verdict import judge
from harness.reporting.directory import ReportDirectory
from harness.reporting.markdown import run_summary_markdown
from harness.reporting.records import RunSummary, ScenarioRecord
from harness.reporting.terminal import render_summary
from harness.scenario import load_scenario
from harness.scenario.yamlload import MAX_DEPTH, MAX_FILE_BYTES, load_one

FUZZ = settings(
    max_examples=int(os.environ.get("NETPOL_FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: Memory a hostile document may cost while it is loaded and refused, and while a
#: document that loads is run and reported (tracemalloc's peak, Python objects).
MEMORY_BOUND = 64 * 1024 * 1024
#: Largest report file a scenario of this size may produce.
REPORT_BOUND = 2 * 1024 * 1024

SCENARIO = """\
description: {description}
namespaces:
  x:
    pods:
      a: {{labels: {{app: a}}, ports: [80/TCP]}}
      b: {{labels: {{app: b}}, ports: [80/TCP]}}
policies: [policy.yaml]
expect: {{default: allowed, rules: [{{from: "*", to: x/b, result: blocked}}]}}
"""
POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-b
  namespace: x
{metadata}spec:
  podSelector: {{matchLabels: {{app: b}}}}
  policyTypes: [Ingress]
{extra}"""


def laughs(levels: int = 9, width: int = 9, leaf: str = "lol", indent: str = "    ") -> str:
    """The classic "billion laughs": ``width``\\ ** ``levels`` copies of ``leaf`` in a
    few hundred bytes, as block mapping entries at ``indent``."""
    lines = [f'{indent}l0: &l0 ["{leaf}"]']
    for level in range(1, levels + 1):
        lines.append(f"{indent}l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def write(directory: Path, metadata: str = "", extra: str = "", description: str = "a hostile policy file") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(POLICY.format(metadata=metadata, extra=extra))
    path = directory / "scenario.yaml"
    path.write_text(SCENARIO.format(description=description))
    return path


def run_and_report(path: Path, reports: Path) -> ScenarioRecord:
    """What a run does with one scenario file, reports included."""
    scenario = load_scenario(path)
    with ModelBackend() as backend:
        result = Pipeline(backend).run_scenario(scenario)
    record = ScenarioRecord.of(str(path), result, judge(result))
    directory = ReportDirectory(reports)
    directory.prepare()
    directory.write_scenario(record)
    directory.write_index(RunSummary((record,)))
    render_summary([record], 80, color=False)
    run_summary_markdown([record], str(reports))
    return record


def peak_memory(action: Any) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            outcome: object = action()
        except HarnessError as err:
            outcome = err
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- each kind of hostile input --------------------------------------------------------


def test_a_billion_laughs_in_a_policy_files_annotations_is_refused_cheaply(tmp_path: Path) -> None:
    path = write(tmp_path, metadata="  annotations:\n" + laughs(indent="    "))
    outcome, peak = peak_memory(lambda: load_scenario(path))
    assert isinstance(outcome, ScenarioError)
    assert str(outcome) == (
        f"{tmp_path / 'policy.yaml'}: line 14, column 9: the document expands to more than 2,000,000 values through "
        "YAML aliases (expected at most 2,000,000 values, 16,777,216 characters and 64 levels); "
        f"the file is policies[0] of {path}"
    )
    assert peak < MEMORY_BOUND


def test_few_aliases_of_a_long_string_are_refused_before_anything_walks_them(tmp_path: Path) -> None:
    """Under the value count, over the text: a 64 KiB string used 4,096 times is
    256 MiB once expanded, which a report would write out."""
    long = "x" * 65536
    doc = f"description: d\nblob: &b {long}\nmany: [" + ", ".join(["*b"] * 4096) + "]\n"
    with pytest.raises(ScenarioError, match="expands to more than 16,777,216 characters through YAML aliases"):
        load_one(doc, "big.yaml")


def test_nesting_and_size_are_bounded(tmp_path: Path) -> None:
    deep_block = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 5)) + f"{'  ' * (MAX_DEPTH + 5)}v: 1\n"
    with pytest.raises(ScenarioError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load_one(deep_block, "deep.yaml")
    # Deep flow brackets go to the pure-Python parser (libyaml's recursion in C would
    # crash the process), which stops at the same limit.
    with pytest.raises(ScenarioError, match="nested"):
        load_one("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "brackets.yaml")
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("description: big\n# " + "x" * (MAX_FILE_BYTES + 1) + "\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(big)
    size = big.stat().st_size
    assert str(info.value) == f"{big}: the file has {size:,} bytes, more than the limit of {MAX_FILE_BYTES:,}"


@pytest.mark.parametrize(
    ("metadata", "field", "message"),
    [
        ("  annotations: {owner: 42}\n", "metadata.annotations.owner", "got int (expected a string"),
        ("  annotations: {owner: [a, b]}\n", "metadata.annotations.owner", "got list (expected a string"),
        ("  labelz: {a: b}\n", "metadata.labelz", "unknown field (expected a field of metadata:"),
        ("  labels: {app: [b]}\n", "metadata.labels.app", "label value ['b'] must be a string"),
    ],
)
def test_metadata_the_api_server_refuses_names_the_file_and_the_scenario_field(
    tmp_path: Path, metadata: str, field: str, message: str
) -> None:
    path = write(tmp_path, metadata=metadata)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.field == field
    assert str(info.value).startswith(f"{tmp_path / 'policy.yaml'}: {field}: NetworkPolicy x/deny-b: {message}")
    assert str(info.value).endswith(f"; the file is policies[0] of {path}")


# -- the whole path, in a real pytest run ---------------------------------------------------


@pytest.mark.parametrize("report_dir", [False, True], ids=["terminal", "report-dir"])
def test_the_bomb_fails_its_scenario_within_seconds_and_the_others_run(tmp_path: Path, report_dir: bool) -> None:
    scenarios = tmp_path / "scenarios"
    write(scenarios / "bomb", metadata="  annotations:\n" + laughs(indent="    "), description="bomb")
    fine = scenarios / "fine.yaml"
    fine.write_text(
        textwrap.dedent(
            """\
            description: fine
            namespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}
            expect: {default: allowed}
            """
        )
    )
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(scenarios), "--backend", "model"]
    if report_dir:
        args += ["--report-dir", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # A generous bound for a loaded CI machine; the refusal itself takes milliseconds.
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "expands to more than 2,000,000 values through YAML aliases" in done.stdout
    if report_dir:
        files = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert "index.html" in files and "fine.json" in files
        assert all(p.stat().st_size < REPORT_BOUND for p in (tmp_path / "out").iterdir())


# -- fuzzing the load-run-report path ------------------------------------------------------

leaves = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.booleans(),
    st.none(),
    st.just("x" * 70_000),
    st.lists(st.text(max_size=5), max_size=5),
)
#: Where a hostile value goes: inside the policy file, or the scenario.
PLACES = ("annotations", "labels", "status", "spec", "top", "description")


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, str, str]:
    """(policy metadata lines, extra top-level policy lines, scenario description)."""
    place = draw(st.sampled_from(PLACES))
    bomb = laughs(
        levels=draw(st.integers(1, 9)),
        width=draw(st.integers(1, 12)),
        leaf=draw(st.sampled_from(["lol", "x" * 1000, "a/b"])),
        indent="    " if place in ("annotations", "labels") else "  ",
    )
    value = yaml.safe_dump(draw(leaves), default_flow_style=True, width=10**9).strip().removesuffix("...").strip()
    if place in ("annotations", "labels"):
        entry = draw(st.sampled_from([bomb, f"    k: {value}\n"]))
        return f"  {place}:\n{entry}", "", "fuzzed"
    if place == "status":
        return "", "status:\n" + draw(st.sampled_from([bomb, f"  s: {value}\n"])), "fuzzed"
    if place == "spec":
        return "", f"  ingress: {value}\n", "fuzzed"  # continues the spec mapping
    if place == "top":
        return "", "extra:\n" + bomb, "fuzzed"
    return "", "", draw(st.sampled_from(["x" * 100_000, value or "empty", "&a lol"]))


@FUZZ
@given(case=hostile())
def test_load_run_report_lets_only_harness_errors_out_and_stays_bounded(tmp_path: Path, case: tuple[str, str, str]) -> None:
    metadata, extra, description = case
    work = tmp_path / f"case-{abs(hash(case)) % 10**8}"
    path = write(work, metadata=metadata, extra=extra, description=description.replace("\n", " "))
    outcome, peak = peak_memory(lambda: run_and_report(path, work / "reports"))
    assert isinstance(outcome, ScenarioRecord | HarnessError), outcome
    event("loaded, run and reported" if isinstance(outcome, ScenarioRecord) else "refused with the harness's error")
    assert peak < MEMORY_BOUND, f"{peak:,} bytes for {case!r}"
    if isinstance(outcome, ScenarioRecord):
        for report in (work / "reports").iterdir():
            assert report.stat().st_size < REPORT_BOUND, report
