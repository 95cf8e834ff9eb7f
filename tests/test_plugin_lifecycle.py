"""Starting and stopping backends from the plugin: one message when a backend cannot
start or clean up, never an internal error, and signal handlers given back.

The backends here stand in for cluster backends that fail (a cluster that does not
come up, a namespace that cannot be deleted), which cannot be produced for real on
this machine; they wrap the model backend.
"""

from __future__ import annotations

import textwrap

import pytest

from harness.api import PolicyTest
from harness.backends.model import ModelBackend
from harness.core.errors import HarnessError, UnknownName

STAND_IN = """
import signal

from harness.backends.model import ModelBackend
from harness.core.errors import BackendError

MODE = {"value": "ok"}


class StandIn(ModelBackend):
    name = "emulated"

    def close(self):
        print("SIGTERM during close:", signal.getsignal(signal.SIGTERM).__name__)
        if MODE["value"] == "close-fails":
            raise BackendError("namespace nph-1-x could not be deleted: connection reset; delete it with kubectl")
        super().close()


def create(options, progress=None):
    if MODE["value"] == "create-fails":
        raise BackendError("kind create cluster failed: node netpol-harness-worker did not start")
    return StandIn()
"""


@pytest.fixture
def stand_in(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(standin_backend=STAND_IN)
    pytester.syspathinsert()
    pytester.makeini("[pytest]\nnetpol_scenarios = scenarios\n")
    pytester.mkdir("scenarios")
    (pytester.path / "scenarios" / "open.yaml").write_text(
        "description: open\nnamespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}\nexpect: {model: true}\n"
    )
    return pytester


def _conftest(mode: str) -> str:
    return textwrap.dedent(f"""\
        import signal

        import harness.backends
        import standin_backend

        harness.backends.BACKENDS["emulated"] = "standin_backend"
        standin_backend.MODE["value"] = {mode!r}


        def pytest_unconfigure(config):
            print("SIGTERM default after the run:", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
        """)


def test_a_backend_that_cannot_start_ends_the_run_with_one_message(stand_in: pytest.Pytester) -> None:
    stand_in.makeconftest(_conftest("create-fails"))
    result = stand_in.runpytest_subprocess("--backend", "emulated")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: backend emulated could not start: kind create cluster failed: node netpol-harness-worker did not start"]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_failed_cleanup_is_reported_and_fails_the_run(stand_in: pytest.Pytester) -> None:
    stand_in.makeconftest(_conftest("close-fails"))
    result = stand_in.runpytest_subprocess("--backend", "emulated", "-s")
    result.stdout.fnmatch_lines(
        ["*netpol-harness: cleanup failed: namespace nph-1-x could not be deleted: connection reset; delete it with kubectl"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str()


def test_sigterm_unwinds_while_a_backend_lives_and_is_given_back_after(stand_in: pytest.Pytester) -> None:
    stand_in.makeconftest(_conftest("ok"))
    result = stand_in.runpytest_subprocess("--backend", "emulated", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*SIGTERM during close: _raise_interrupt*", "SIGTERM default after the run: True"])


def test_policy_test_names_what_is_not_declared() -> None:
    with PolicyTest(ModelBackend()) as test:
        test.deploy({"x": {"pods": {"a": {"ports": ["80/TCP"]}}}})
        with pytest.raises(UnknownName, match="no pod 'x/zz' is declared; pods: x/a"):
            test.label_pod("x/zz", {"app": "web"})
        with pytest.raises(UnknownName, match="no namespace 'y' is declared; namespaces: x"):
            test.label_namespace("y", {"team": "a"})
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "y"},
            "spec": {"podSelector": {}},
        }
        with pytest.raises(HarnessError, match="no namespace 'y' is declared"):
            test.apply(policy)


def test_policy_test_reset_restores_declared_labels_and_removes_policies() -> None:
    deny_b = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"]},
    }
    with PolicyTest(ModelBackend()) as test:
        test.deploy(
            {
                "x": {
                    "labels": {"team": "a"},
                    "pods": {
                        "a": {"labels": {"app": "web"}, "ports": ["80/TCP"]},
                        "b": {"labels": {"app": "api"}, "ports": ["80/TCP"]},
                    },
                }
            }
        )
        test.apply(deny_b)
        test.label_pod("x/a", {"app": "db"})
        test.label_namespace("x", {"team": None})
        assert test.state.topology.pod("x/a").labels["app"] == "db"
        assert not test.probe().allowed("x/a", "x/b", "80/TCP")
        test.reset()
        assert dict(test.state.policies) == {}
        assert test.state.topology.pod("x/a").labels["app"] == "web"
        assert test.state.topology.namespace("x").labels["team"] == "a"
        assert test.probe().allowed("x/a", "x/b", "80/TCP")
