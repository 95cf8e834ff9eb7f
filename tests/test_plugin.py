"""The pytest plugin end to end, through pytester, on the model backend."""

from __future__ import annotations

import textwrap

import pytest

DB_SCENARIO = """\
description: The database accepts 3306/TCP only from backend pods in its namespace.
namespaces:
  production:
    pods:
      db: {labels: {app: database}, ports: [3306/TCP]}
      backend: {labels: {app: backend}, ports: [80/TCP]}
      frontend: {labels: {app: frontend}, ports: [80/TCP]}
  development:
    pods:
      backend: {labels: {app: backend}, ports: [80/TCP]}
policies:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: db-from-backend, namespace: production}
    spec:
      podSelector: {matchLabels: {app: database}}
      ingress:
        - from: [{podSelector: {matchLabels: {app: backend}}}]
          ports: [{port: 3306}]
expect:
  rules:
    - {from: "*", to: production/db, result: blocked}
    - from: {namespace: production, podSelector: {matchLabels: {app: backend}}}
      to: production/db
      port: 3306/TCP
      result: RESULT
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nnetpol_scenarios = scenarios\n")
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "db-from-backend.yaml").write_text(DB_SCENARIO.replace("RESULT", "allowed"))
    (scenarios / "db-wrong.yaml").write_text("name: db-wrong\n" + DB_SCENARIO.replace("RESULT", "blocked"))
    (scenarios / "open.yaml").write_text(
        textwrap.dedent("""\
        description: No policy, everything reaches everything.
        namespaces:
          x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}
        expect: {default: allowed, rules: []}
        """)
    )
    return pytester


def test_each_scenario_file_is_one_item_named_after_the_scenario(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--collect-only", "-q", "scenarios")
    result.stdout.fnmatch_lines(
        [
            "scenarios/db-from-backend.yaml::db-from-backend",
            "scenarios/db-wrong.yaml::db-wrong",
            "scenarios/open.yaml::open",
        ]
    )


def test_scenario_option_selects_by_glob_without_a_path(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--scenario", "db-*", "-v")
    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*db-from-backend PASSED*", "*db-wrong FAILED*"])


def test_scenario_option_is_repeatable(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--scenario", "open", "--scenario", "db-from-backend")
    result.assert_outcomes(passed=2, deselected=1)


def test_unknown_scenario_name_is_a_usage_error_listing_known_ones(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--scenario", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--scenario nope: no scenario of that name was collected. Known scenarios: db-from-backend, db-wrong, open*"]
    )


def test_wrong_expectation_prints_three_tables_and_one_line_per_wrong_cell(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--scenario", "db-wrong")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for title in ("expected 3306/TCP", "observed 3306/TCP", "comparison 3306/TCP"):
        assert title in out
    result.stdout.fnmatch_lines(
        [
            "1 wrong cell(s):",
            "production/backend → production/db:3306/TCP expected blocked, observed allowed",
            "    reproduce: python -m harness explain scenarios/db-wrong.yaml --step main "
            "production/backend production/db 3306/TCP",
        ]
    )
    # Ports whose cells all match are left out of the report.
    assert "expected 80/TCP" not in out
    assert "Traceback" not in out


def test_reproduce_command_runs_and_explains_the_cell(project: pytest.Pytester) -> None:
    result = project.run(
        "python", "-m", "harness", "explain", "scenarios/db-wrong.yaml", "production/frontend", "production/db", "3306/TCP"
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "production/frontend → production/db:3306/TCP is blocked by the reference model",
            "  because: egress of production/frontend not isolated; ingress of production/db isolated by "
            "production/db-from-backend, no rule allows it",
        ]
    )


def test_malformed_scenario_is_reported_against_its_file_and_others_still_run(project: pytest.Pytester) -> None:
    (project.path / "scenarios" / "broken.yaml").write_text(
        textwrap.dedent("""\
        description: broken on purpose
        namespaces:
          x: {pods: {a: {ports: [80/TCP]}}}
        expect:
          rules:
            - {from: x/zz, to: "*", result: allowed}
        """)
    )
    (project.path / "scenarios" / "syntax.yaml").write_text("description: [unclosed\nnamespaces: {}\n")
    result = project.runpytest("--backend", "model", "scenarios")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "invalid scenario: scenarios/broken.yaml: expect.rules[[]0].from: 'x/zz' matches no pod or external host "
            "(expected one of x/a, or a pattern such as x/*)",
            "invalid scenario: scenarios/syntax.yaml: line 2, column 11: invalid YAML: *",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_duplicate_scenario_names_fail_both_places_clearly(project: pytest.Pytester) -> None:
    (project.path / "scenarios" / "copy.yaml").write_text("name: open\n" + (project.path / "scenarios" / "open.yaml").read_text())
    result = project.runpytest("--backend", "model", "scenarios")
    result.stdout.fnmatch_lines(["*: name: scenario name 'open' is also used by *"])
    result.assert_outcomes(passed=2, failed=2)


def _xfail(reason: str, *cells: str) -> str:
    listed = "".join(f'    - "{cell}"\n' for cell in cells)
    return f"xfail:\n  reason: {reason}\n  wrong_cells:\n{listed}"


def test_xfail_scenario_fails_exactly_as_documented_or_fails(project: pytest.Pytester) -> None:
    scenarios = project.path / "scenarios"
    wrong = (scenarios / "db-wrong.yaml").read_text()
    (scenarios / "pitfall.yaml").write_text(
        _xfail("the author meant it", "production/backend → production/db:3306/TCP") + wrong.replace("db-wrong", "pitfall")
    )
    # The same pitfall documented with a different cell, and with one cell too many.
    (scenarios / "other-cell.yaml").write_text(
        _xfail("wrong cell named", "production/frontend → production/db:3306/TCP") + wrong.replace("db-wrong", "other-cell")
    )
    (scenarios / "one-more.yaml").write_text(
        _xfail("one cell too many", "production/backend → production/db:3306/TCP", "development/backend → production/db:3306/TCP")
        + wrong.replace("db-wrong", "one-more")
    )
    (scenarios / "not-a-pitfall.yaml").write_text(
        _xfail("claims a pitfall that is not one", "x/a → x/b:80/TCP")
        + (scenarios / "open.yaml").read_text().replace("description:", "name: np\ndescription:")
    )
    result = project.runpytest("--backend", "model", "-k", "pitfall or other or one or np", "-rxX")
    result.assert_outcomes(xfailed=1, failed=3)
    result.stdout.fnmatch_lines(["*XFAIL*pitfall*the author meant it*"])
    out = result.stdout.str()
    assert "np: expected to fail (claims a pitfall that is not one), but every probed cell is as the intent says" in out
    assert "other-cell: the expected failure is not the documented one: 2 cell(s) differ" in out
    assert "one-more: the expected failure is not the documented one: 1 cell(s) differ" in out
    assert "development/backend → production/db:3306/TCP expected allowed, observed blocked" in out


def test_bad_option_values_say_where_they_came_from(project: pytest.Pytester) -> None:
    result = project.runpytest("--backend", "model", "--probe-timeout", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --probe-timeout: '-1' must be a finite number of seconds above 0*"])
    result = project.runpytest("--backend", "nowhere")
    result.stderr.fnmatch_lines(["*argument --backend: invalid choice: 'nowhere'*"])
    project.makeini("[pytest]\nnetpol_scenarios = scenarios\nnetpol_backend = kube\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tox.ini: netpol_backend = 'kube' is not a backend; use one of *"])


def test_scenario_directories_come_from_the_ini_setting(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnetpol_scenarios = policies/tests\n")
    (pytester.mkdir("policies") / "tests").mkdir()
    (pytester.path / "policies" / "tests" / "open.yaml").write_text(
        textwrap.dedent("""\
        description: open
        namespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}
        expect: {model: true}
        """)
    )
    result = pytester.runpytest("--backend", "model", "--scenario", "open")
    result.assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nnetpol_scenarios = missing\n")
    result = pytester.runpytest("--backend", "model", "--scenario", "open")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--scenario: scenario directory */missing does not exist*"])


def test_netpol_fixture_declares_applies_probes_and_asserts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent("""\
        import pytest
        from harness.api import ReachabilityMismatch

        DENY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "x"},
                "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}}

        def test_deny(netpol):
            netpol.deploy({"x": {"pods": {"a": {"labels": {"pod": "a"}, "ports": ["80/TCP"]},
                                          "b": {"labels": {"pod": "b"}, "ports": ["80/TCP"]}}}})
            netpol.assert_reachability({"model": True})
            netpol.apply(DENY)
            observed = netpol.probe()
            assert observed.allowed("x/b", "x/a", "80/TCP")
            assert not observed.allowed("x/a", "x/b", "80/TCP")
            netpol.assert_reachability({"default": "allowed", "rules": [{"from": "*", "to": "x/b", "result": "blocked"}]})
            with pytest.raises(ReachabilityMismatch, match="x/a → x/b:80/TCP expected allowed, observed blocked"):
                netpol.assert_reachability({"default": "allowed", "rules": []})
            netpol.label_pod("x/b", {"pod": "c"})
            assert netpol.probe().allowed("x/a", "x/b", "80/TCP")
        """)
    )
    result = pytester.runpytest("--backend", "model")
    result.assert_outcomes(passed=1)
