"""Reachability matrices: access, text and JSON forms, and expected-vs-observed comparison."""

from __future__ import annotations

import json

import pytest

from harness.core.errors import HarnessError
from harness.core.matrix import (
    ALLOWED,
    BLOCKED,
    COMPARISON_LEGEND,
    LEGEND,
    LISTED_CELLS,
    Cell,
    Mismatch,
    Observation,
    Outcome,
    ReachabilityMatrix,
    compare,
    iter_cells,
)
from harness.core.topology import PortProtocol

P80 = PortProtocol.parse("80/TCP")
P53 = PortProtocol.parse("53/UDP")
SOURCES = ("x/a", "x/b")
DESTINATIONS = ("x/a", "x/b", "api")


def cell(src: str, dst: str, port: PortProtocol = P80) -> Cell:
    return Cell(src, dst, port)


def expected_matrix() -> ReachabilityMatrix:
    """x/a and x/b on 80/TCP (self cells not probed), api on 80/TCP, x/b on 53/UDP."""
    return ReachabilityMatrix(
        SOURCES,
        DESTINATIONS,
        (P80, P53),
        {
            cell("x/a", "x/b"): ALLOWED,
            cell("x/a", "api"): BLOCKED,
            cell("x/b", "x/a"): ALLOWED,
            cell("x/b", "api"): ALLOWED,
            cell("x/a", "x/b", P53): BLOCKED,
        },
    )


# -- access --------------------------------------------------------------------------------


def test_get_and_allowed() -> None:
    m = expected_matrix()
    assert m.get("x/a", "x/b", "80/TCP") is ALLOWED
    assert m.get("x/a", "x/b", P80) is ALLOWED
    assert m.get("x/a", "x/b", "80") is ALLOWED  # protocol defaults to TCP
    assert m.get("x/a", "x/a", "80/TCP") is None
    assert m.get("x/a", "x/b", "80/UDP") is None
    assert m.allowed("x/a", "x/b", "80/TCP") is True
    assert m.allowed("x/a", "api", "80/TCP") is False
    assert m.allowed("x/a", "x/b", "53/UDP") is False
    assert m[cell("x/b", "api")] is ALLOWED


def test_allowed_of_a_missing_cell_raises() -> None:
    with pytest.raises(KeyError, match="x/a → x/a:80/TCP is not in the matrix"):
        expected_matrix().allowed("x/a", "x/a", "80/TCP")


def test_only_the_allowed_outcome_is_allowed() -> None:
    m = ReachabilityMatrix(
        SOURCES,
        DESTINATIONS,
        (P80,),
        {
            cell("x/a", "x/b"): Observation(Outcome.REFUSED, "connection refused"),
            cell("x/a", "api"): Observation(Outcome.WRONG_RESPONDER, "answered by x/b"),
            cell("x/b", "x/a"): Observation(Outcome.ERROR, "curl exited 2"),
        },
    )
    assert not any(m.allowed(c.source, c.destination, c.port) for c in m.cells)


def test_count_and_with_cells() -> None:
    m = expected_matrix()
    assert m.count(Outcome.ALLOWED) == 3 and m.count(Outcome.BLOCKED) == 2
    changed = m.with_cells({cell("x/a", "api"): ALLOWED, cell("x/a", "x/a"): BLOCKED})
    assert changed.count(Outcome.ALLOWED) == 4 and changed.count(Outcome.BLOCKED) == 2
    assert changed.allowed("x/a", "api", "80/TCP") is True
    assert m.allowed("x/a", "api", "80/TCP") is False  # the original is untouched
    assert changed.sources == m.sources and changed.ports == m.ports


def test_cells_are_immutable_and_copied() -> None:
    source = {cell("x/a", "x/b"): ALLOWED}
    m = ReachabilityMatrix(SOURCES, DESTINATIONS, (P80,), source)
    source[cell("x/b", "x/a")] = BLOCKED
    assert len(m.cells) == 1
    with pytest.raises(TypeError):
        m.cells[cell("x/b", "x/a")] = BLOCKED  # type: ignore[index]


def test_cell_and_outcome_texts() -> None:
    assert str(cell("x/a", "y/b")) == "x/a → y/b:80/TCP"
    assert str(cell("x/a", "api", P53)) == "x/a → api:53/UDP"
    assert [o.symbol for o in Outcome] == [".", "X", "R", "W", "U", "E", "N", "P"]
    assert [Outcome.from_code(o.code) for o in Outcome] == list(Outcome)
    assert Outcome.from_bool(True) is Outcome.ALLOWED and Outcome.from_bool(False) is Outcome.BLOCKED
    assert Observation(Outcome.BLOCKED, "timeout").describe() == "blocked (timeout)"
    assert BLOCKED.describe() == "blocked"


def test_iter_cells_order() -> None:
    assert list(iter_cells(["s1", "s2"], ["d"], [P80, P53])) == [
        Cell("s1", "d", P80),
        Cell("s2", "d", P80),
        Cell("s1", "d", P53),
        Cell("s2", "d", P53),
    ]


# -- text ------------------------------------------------------------------------------------


def test_render_one_grid_per_port() -> None:
    text = expected_matrix().render("step")
    assert text == "\n".join(
        [
            "step 80/TCP",
            "    x/a x/b api",
            "x/a  -   .   X",
            "x/b  .   -   .",
            "",
            "step 53/UDP",
            "    x/b",
            "x/a  X",
            "x/b  -",
        ]
    )


def test_render_symbols_and_chosen_ports() -> None:
    m = ReachabilityMatrix(
        ("x/a",),
        ("x/b", "x/c", "x/d", "x/e", "x/f"),
        (P80, P53),
        {
            cell("x/a", "x/b"): Observation(Outcome.REFUSED),
            cell("x/a", "x/c"): Observation(Outcome.WRONG_RESPONDER),
            cell("x/a", "x/d"): Observation(Outcome.ERROR),
            cell("x/a", "x/e"): Observation(Outcome.UNSUPPORTED),
            cell("x/a", "x/f"): ALLOWED,
            cell("x/a", "x/b", P53): BLOCKED,
        },
    )
    assert m.render(ports=[P80]).splitlines() == ["80/TCP", "    x/b x/c x/d x/e x/f", "x/a  R   W   E   U   ."]
    assert m.render(ports=[P53]).splitlines() == ["53/UDP", "    x/b", "x/a  X"]


# -- JSON ------------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    m = expected_matrix().with_cells(
        {
            cell("x/a", "api"): Observation(Outcome.BLOCKED, "timeout", "kubectl exec -n x a -- curl ..."),
        }
    )
    data = json.loads(json.dumps(m.to_json()))
    assert data["sources"] == list(SOURCES)
    assert data["destinations"] == list(DESTINATIONS)
    # One row of symbols per source, one symbol per destination ("-" not probed).
    assert data["ports"] == {"80/TCP": ["-.X", ".-."], "53/UDP": ["-X-", "---"]}
    # Cells with more than their outcome are listed beside the rows.
    assert data["notes"] == [
        {
            "source": "x/a",
            "destination": "api",
            "port": "80/TCP",
            "outcome": "blocked",
            "detail": "timeout",
            "command": "kubectl exec -n x a -- curl ...",
        }
    ]
    again = ReachabilityMatrix.from_json(data)
    assert again == m
    assert again.sources == m.sources and again.destinations == m.destinations and again.ports == m.ports
    assert dict(again.cells) == dict(m.cells)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"sources": [], "destinations": []},
        {"sources": ["x/a"], "destinations": ["x/b"], "ports": {"80/TCP": ["?"]}},
        {"sources": ["x/a"], "destinations": ["x/b"], "ports": {"eighty": ["."]}},
        {"sources": ["x/a"], "destinations": ["x/b"], "ports": {"80/TCP": [".."]}},
        {"sources": ["x/a"], "destinations": ["x/b"], "ports": {"80/TCP": []}},
        {"sources": ["x/a"], "destinations": ["x/b"], "ports": {"80/TCP": ["é"]}},
        {
            "sources": ["x/a"],
            "destinations": ["x/b"],
            "ports": {"80/TCP": ["."]},
            "notes": [{"source": "x/a", "destination": "x/b", "port": "80/TCP", "outcome": "blocked"}],
        },
    ],
)
def test_from_json_rejects_other_data(data: object) -> None:
    with pytest.raises(HarnessError, match="not a reachability matrix in JSON form"):
        ReachabilityMatrix.from_json(data)


# -- comparison ------------------------------------------------------------------------------


def test_compare_equal_matrices_is_ok() -> None:
    result = compare(expected_matrix(), expected_matrix())
    assert result.ok
    assert result.mismatches == () and result.unsupported == ()
    assert result.wrong_cells() == frozenset()


def test_compare_reports_each_wrong_cell() -> None:
    observed = expected_matrix().with_cells(
        {
            cell("x/a", "x/b"): Observation(Outcome.BLOCKED, "timeout", "curl -m 1 http://192.168.1.11:80"),
            cell("x/b", "api"): Observation(Outcome.REFUSED, "connection refused"),
        }
    )
    result = compare(expected_matrix(), observed)
    assert not result.ok
    assert result.wrong_cells() == {cell("x/a", "x/b"), cell("x/b", "api")}
    lines = [m.line() for m in result.mismatches]
    assert lines == [
        "x/a → x/b:80/TCP expected allowed, observed blocked (timeout)",
        "x/b → api:80/TCP expected allowed, observed refused (connection refused)",
    ]


def test_compare_blocked_expected_but_allowed() -> None:
    observed = expected_matrix().with_cells({cell("x/a", "x/b", P53): ALLOWED})
    (mismatch,) = compare(expected_matrix(), observed).mismatches
    assert mismatch == Mismatch(cell("x/a", "x/b", P53), Outcome.BLOCKED, ALLOWED)
    assert mismatch.line() == "x/a → x/b:53/UDP expected blocked, observed allowed"


def test_compare_lists_unsupported_cells_apart() -> None:
    observed = expected_matrix().with_cells(
        {
            cell("x/a", "x/b", P53): Observation(Outcome.UNSUPPORTED, "no SCTP in this kernel"),
            cell("x/a", "api"): Observation(Outcome.UNSUPPORTED, "no external hosts"),
        }
    )
    result = compare(expected_matrix(), observed)
    assert result.ok
    assert result.mismatches == ()
    assert set(result.unsupported) == {cell("x/a", "x/b", P53), cell("x/a", "api")}


def test_compare_reports_missing_cells() -> None:
    observed = ReachabilityMatrix(
        SOURCES, DESTINATIONS, (P80, P53), {c: o for c, o in expected_matrix().cells.items() if c != cell("x/b", "x/a")}
    )
    result = compare(expected_matrix(), observed)
    assert not result.ok
    (mismatch,) = result.mismatches
    assert mismatch.cell == cell("x/b", "x/a")
    assert mismatch.observed.outcome is Outcome.ERROR
    assert mismatch.line() == "x/b → x/a:80/TCP expected allowed, observed error (not probed)"


def test_extra_observed_cells_are_not_judged() -> None:
    observed = expected_matrix().with_cells({cell("x/a", "x/a"): BLOCKED})
    assert compare(expected_matrix(), observed).ok


def test_comparison_render() -> None:
    observed = expected_matrix().with_cells(
        {
            cell("x/a", "x/b"): Observation(Outcome.BLOCKED, "timeout", "curl -m 1 http://192.168.1.11:80"),
            cell("x/b", "api"): Observation(Outcome.UNSUPPORTED, "no external hosts"),
        }
    )
    result = compare(expected_matrix(), observed)
    text = result.render("main: ")
    expected_block = "\n".join(["main: expected 80/TCP", "    x/a x/b api", "x/a  -   .   X", "x/b  .   -   ."])
    observed_block = "\n".join(["main: observed 80/TCP", "    x/a x/b api", "x/a  -   X   X", "x/b  .   -   U"])
    # The comparison has symbols of its own: '=' as expected, '!' wrong.
    comparison_block = "\n".join(["main: comparison 80/TCP", "    x/a x/b api", "x/a  -   !   =", "x/b  =   -   ="])
    assert expected_block in text
    assert observed_block in text
    assert comparison_block in text
    assert LEGEND in text and COMPARISON_LEGEND in text
    # The wrong cells come first: a CI page that cuts the message keeps them.
    assert text.startswith(
        "1 wrong cell(s):\nx/a → x/b:80/TCP expected allowed, observed blocked (timeout)\n"
        "    reproduce: curl -m 1 http://192.168.1.11:80"
    )
    assert "1 probe(s) not run on this backend:\nx/b → api:80/TCP unsupported (no external hosts)" in text
    # 53/UDP matches everywhere: it adds nothing to the failure report.
    assert "53/UDP" not in text


def test_comparison_render_without_failures_shows_every_port() -> None:
    text = compare(expected_matrix(), expected_matrix()).render()
    for title in ("expected 80/TCP", "observed 80/TCP", "comparison 80/TCP", "expected 53/UDP", "comparison 53/UDP"):
        assert title in text
    assert "wrong cell" not in text
    assert "reproduce" not in text


def test_comparison_of_equal_matrices_is_ok() -> None:
    result = compare(expected_matrix(), expected_matrix())
    assert result.ok and result.unsupported == () and result.mismatch_count == 0


def test_a_failure_of_thousands_of_cells_lists_the_first_and_counts_the_rest() -> None:
    sources = tuple(f"x/p{i}" for i in range(60))
    destinations = tuple(f"y/q{j}" for j in range(60))
    expected = ReachabilityMatrix(
        sources, destinations, (P80,), {Cell(s, d, P80): ALLOWED for s in sources for d in destinations}
    )
    observed = ReachabilityMatrix(
        sources, destinations, (P80,), {Cell(s, d, P80): BLOCKED for s in sources for d in destinations}
    )
    result = compare(expected, observed)
    assert result.mismatch_count == 3600
    text = result.render()
    lines = text.splitlines()
    assert lines[0] == "3600 wrong cell(s):"
    assert sum(1 for line in lines if "expected allowed, observed blocked" in line) == LISTED_CELLS
    assert "... and 3580 more (all in the reports), by group:" in text
    assert "  x/* → y/*:80/TCP expected allowed: 3580 cell(s)" in text
    # The tables are drawn around the wrong cells only, and bounded.
    assert "rows and columns with a wrong cell only, at most 40 of each" in text
    assert len(text) < 40_000
