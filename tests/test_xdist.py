"""Under pytest-xdist, every report is the one a serial run writes.

The shipped library runs twice on the model backend, serially and with ``-n 2``,
each writing a report directory, JUnit XML, baselines and a GitHub step summary;
the files are compared one by one, with what legitimately differs between two
runs (durations, dates, host names) set aside.
"""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "scenarios"

_DURATION = re.compile(r"\b\d+\.\d\ds\b|\b\d+m \d\ds\b")
_DATE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?(\+00:00| UTC)?")


def _plain(text: str) -> str:
    """Text with what differs between two runs set aside: durations, dates, and the
    name of the run's own output directory."""
    text = text.replace("/parallel/", "/<run>/").replace("/serial/", "/<run>/")
    return _DATE.sub("<date>", _DURATION.sub("<duration>", text))


def _without(data: Any, keys: set[str]) -> Any:
    if isinstance(data, dict):
        return {k: _without(v, keys) for k, v in data.items() if k not in keys}
    if isinstance(data, list):
        return [_without(v, keys) for v in data]
    return data


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, *extra: str
) -> tuple[Path, list[str], dict[str, int]]:
    out = pytester.path / name
    out.mkdir()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(out / "step-summary.md"))
    monkeypatch.setenv("COLUMNS", "100")
    # The harness of this checkout, not whichever one is installed.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = pytester.runpytest_subprocess(
        str(LIBRARY),
        "--backend",
        "model",
        "-p",
        "no:cacheprovider",
        "--report-dir",
        str(out / "reports"),
        "--record-baseline",
        str(out / "baselines"),
        "--junitxml",
        str(out / "junit.xml"),
        *extra,
    )
    outcomes = result.parseoutcomes()
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "netpol-harness summary" in line)
    end = next(i for i in range(start, len(lines)) if " scenarios: " in lines[i])
    return out, [_plain(line) for line in lines[start : end + 1]], outcomes


def _junit(path: Path) -> dict[str, tuple[str, list[tuple[str | None, str | None]]]]:
    root = ET.parse(path).getroot()
    cases = {}
    for case in root.iter("testcase"):
        outcome = ",".join(child.tag for child in case if child.tag != "properties") or "passed"
        props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
        cases[f"{case.get('classname')}::{case.get('name')}"] = (outcome, props)
    return cases


def test_a_parallel_run_reports_exactly_what_a_serial_run_does(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert importlib.util.find_spec("xdist") is not None, "pytest-xdist is a test dependency ([dev])"
    serial, serial_table, serial_outcomes = _run(pytester, monkeypatch, "serial")
    parallel, parallel_table, parallel_outcomes = _run(pytester, monkeypatch, "parallel", "-n", "2")
    library = len(list(LIBRARY.glob("*.yaml")))
    assert library >= 40 and serial_outcomes.get("passed", 0) + serial_outcomes.get("xfailed", 0) == library
    assert parallel_outcomes == serial_outcomes

    # The terminal summary table, row for row.
    assert parallel_table == serial_table
    assert any(line.startswith(" conformance-stacked-policies ") for line in serial_table)

    # The report directory, file by file.
    names = sorted(p.name for p in (serial / "reports").iterdir())
    assert names == sorted(p.name for p in (parallel / "reports").iterdir())
    assert len([n for n in names if n.endswith(".json")]) == library and "index.html" in names
    for name in names:
        ours, theirs = (serial / "reports" / name).read_text(), (parallel / "reports" / name).read_text()
        if name.endswith(".json"):
            assert _without(json.loads(_plain(theirs)), {"duration"}) == _without(json.loads(_plain(ours)), {"duration"}), name
        else:
            assert _plain(theirs) == _plain(ours), name
    index = (parallel / "reports" / "index.html").read_text()
    assert index.count('<section class="scenario') == library and "no scenario ran" not in index

    # Baselines, JUnit properties and the CI step summary.
    for path in sorted((serial / "baselines").iterdir()):
        twin = parallel / "baselines" / path.name
        recorded = {"at"}
        assert _without(json.loads(twin.read_text()), recorded) == _without(json.loads(path.read_text()), recorded), path.name
    assert len(list((serial / "baselines").iterdir())) == library
    assert _junit(parallel / "junit.xml") == _junit(serial / "junit.xml")
    summary = (parallel / "step-summary.md").read_text()
    assert summary.count("## netpol-harness:") == 1  # one section, from the controller
    assert _plain(summary) == _plain((serial / "step-summary.md").read_text())
