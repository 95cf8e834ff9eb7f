"""No verdict on state left behind: the pipeline on a cluster backend whose CNI
programs policies a few probe rounds after they are applied, as Calico's Felix
does (it watches the API server and programs the dataplane asynchronously).

What is real: the cluster backend, the probe script with curl and nc, the servers
at each pod's loopback address, the pipeline and its waits, and the kernel's
dropping of a connection attempt: a blocked cell is probed against a listening
socket whose accept queue is full (TCP) or that never answers (UDP), so the client
times out exactly as behind a policy that drops. What stands in for Calico is the
lag (a number of probe rounds) and which cells are dropped: ingress to pods that a
deny-all NetworkPolicy (``podSelector.matchLabels``, ``policyTypes: [Ingress]``, no
rules) selects, the only kind of policy these tests apply."""

from __future__ import annotations

import copy
import shutil
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cluster_double import BlackHole, InMemoryCluster  # the helper modules beside this file

from harness.backends.base import BackendInfo
from harness.backends.cluster.backend import ClusterBackend
from harness.core.errors import BackendError
from harness.core.matrix import Outcome
from harness.core.topology import PortProtocol
from harness.engine.pipeline import Pipeline
from harness.engine.probing import ProbeSettings
from harness.kube.api import ExecRequest, ExecResult
from harness.kube.naming import NamespaceMap
from harness.kube.probe_script import SCRIPT_NAME
from harness.scenario import Scenario, load_scenario

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "nc")), reason="needs curl and nc (apt-get install curl netcat-openbsd)"
)

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
#: Never: a change that is not programmed before the test ends.
NEVER = 10**9

TOPOLOGY = """\
namespaces:
  shop:
    pods:
      web: {labels: {app: web}, ports: [8080/TCP]}
      api: {labels: {app: api}, ports: [8080/TCP]}
"""
DENY_API = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-api, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
"""


class LateCalico(InMemoryCluster):
    """The in-memory API server, with a CNI that puts policy changes in force
    ``lag`` probe rounds after they are made (``delete_lag`` for deletions)."""

    def __init__(self, lag: int, delete_lag: int | None = None) -> None:
        super().__init__(ready_after=1)
        self.lag = lag
        self.delete_lag = lag if delete_lag is None else delete_lag
        self.enforced: dict[tuple[str, str], dict[str, Any]] = {}
        self._pending: dict[tuple[str, str], dict[str, Any]] | None = None
        self._countdown = 0
        self.hole_address = f"{self.subnet}.250"
        self.holes: dict[int, BlackHole] = {}
        #: Per probe round: (source pod, destination pod, what the CNI did).
        self.rounds: list[list[tuple[str, str, str]]] = []

    # -- the CNI's view of the policies
    def _changed(self, lag: int) -> None:
        self._pending = copy.deepcopy(self.policies)
        self._countdown = lag

    def apply_policy(self, manifest: Mapping[str, Any]) -> None:
        spec = manifest["spec"]
        assert spec.get("policyTypes") == ["Ingress"] and not spec.get("ingress"), "only deny-all ingress policies here"
        super().apply_policy(manifest)
        self._changed(self.lag)

    def delete_policy(self, namespace: str, name: str) -> bool:
        found = super().delete_policy(namespace, name)
        self._changed(self.delete_lag)
        return found

    def delete_all_policies(self, namespace: str) -> None:
        super().delete_all_policies(namespace)
        self._changed(self.delete_lag)

    def _dropped(self, address: str) -> bool:
        """Ingress to the pod at ``address`` is dropped by a policy in force."""
        for (namespace, _), pod in self.pods.items():
            if pod["status"].get("podIP") != address:
                continue
            labels = pod["metadata"].get("labels") or {}
            for (policy_ns, _), policy in self.enforced.items():
                wanted = policy["spec"]["podSelector"].get("matchLabels", {})
                if policy_ns == namespace and all(labels.get(k) == v for k, v in wanted.items()):
                    return True
        return False

    # -- probe rounds
    def exec_many(self, requests: Sequence[ExecRequest], workers: int) -> list[ExecResult]:
        if self._pending is not None:
            if self._countdown <= 0:
                self.enforced, self._pending = self._pending, None
            else:
                self._countdown -= 1
        self.rounds.append([])
        return super().exec_many([self._through_policies(r) for r in requests], workers)

    def _through_policies(self, request: ExecRequest) -> ExecRequest:
        """The probe script's request with each probe of a dropped cell sent to the
        black hole instead (same port, so curl's and nc's command lines stay valid)."""
        args = list(request.command)
        if len(args) < 5 or args[3] != SCRIPT_NAME:
            return request
        i = 5
        source = request.pod
        while i < len(args):
            count = int(args[i + 2])
            argv = args[i + 3 : i + 3 + count]
            address, destination = next((a, name) for a, name in self._pod_addresses() if any(a in word for word in argv))
            dropped = self._dropped(address)
            self.rounds[-1].append((source, destination, "dropped" if dropped else "passed"))
            if dropped:
                port = next(int(w.rsplit(":", 1)[1].strip("/")) for w in argv if w.startswith("http://"))
                if port not in self.holes:
                    self.holes[port] = BlackHole(self.hole_address, port)
                args[i + 3 : i + 3 + count] = [w.replace(address, self.hole_address) for w in argv]
            i += 3 + count
        return ExecRequest(request.namespace, request.pod, request.container, tuple(args), request.timeout)

    def _pod_addresses(self) -> list[tuple[str, str]]:
        return [(str(pod["status"]["podIP"]), name) for (_, name), pod in self.pods.items() if pod["status"].get("podIP")]

    def close(self) -> None:
        for hole in self.holes.values():
            hole.close()
        super().close()


class OnTheDouble(ClusterBackend):
    name = "existing"
    poll = 0.01

    def info(self) -> BackendInfo:
        return BackendInfo(self.name, "in-memory double with late policy programming")

    def close(self) -> None:
        self.close_namespaces()


def scenario(tmp_path: Path, name: str, body: str) -> Scenario:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"description: {name}\n" + TOPOLOGY + textwrap.dedent(body))
    return load_scenario(path)


@pytest.fixture
def scenarios(tmp_path: Path) -> tuple[Scenario, Scenario]:
    (tmp_path / "deny-api.yaml").write_text(DENY_API)
    deny = scenario(
        tmp_path,
        "api-denied",
        """\
        policies: [deny-api.yaml]
        expect:
          default: allowed
          rules: [{from: "*", to: shop/api, result: blocked}]
        """,
    )
    open_ = scenario(tmp_path, "open", "expect: {default: allowed}\n")
    return deny, open_


@contextmanager
def pipeline_on(cluster: LateCalico, deadline: float) -> Iterator[Pipeline]:
    backend = OnTheDouble(cluster, NamespaceMap("r1"), IMAGE, lambda _: None, adopt_existing_namespaces=False, run_id="r1")
    try:
        yield Pipeline(backend, ProbeSettings(timeout=0.5, deadline=deadline, interval=0.05))
    finally:
        backend.close()
        cluster.close()


def web_to_api(cluster: LateCalico, rounds: Sequence[list[tuple[str, str, str]]]) -> list[list[str]]:
    """What the CNI did with shop/web → shop/api in each of ``rounds``."""
    return [[verdict for source, destination, verdict in r if (source, destination) == ("web", "api")] for r in rounds]


def test_the_next_scenario_starts_once_the_last_ones_policy_is_gone(scenarios: tuple[Scenario, Scenario]) -> None:
    cluster = LateCalico(lag=2)
    with pipeline_on(cluster, deadline=10.0) as pipeline:
        deny, open_ = scenarios
        first = pipeline.run_scenario(deny)
        assert first.ok, first.render()
        after_first = len(cluster.rounds)
        second = pipeline.run_scenario(open_)
        assert second.ok, second.render()
        seen = web_to_api(cluster, cluster.rounds[after_first:])
        # Before the open scenario's step: rounds of only the cell the deny blocked,
        # until the deletion is programmed (two rounds late); then the step's round.
        assert seen == [["dropped"], ["dropped"], ["passed"], ["passed"]]
        assert [len(r) for r in cluster.rounds[after_first:]] == [1, 1, 1, 2]


def test_no_verdict_while_the_last_ones_policy_stays_in_force(scenarios: tuple[Scenario, Scenario]) -> None:
    cluster = LateCalico(lag=0, delete_lag=NEVER)
    with pipeline_on(cluster, deadline=1.5) as pipeline:
        deny, open_ = scenarios
        first = pipeline.run_scenario(deny)
        assert first.ok, first.render()
        after_first = len(cluster.rounds)
        with pytest.raises(BackendError) as err:
            pipeline.run_scenario(open_)
    assert str(err.value).startswith(
        "the cluster did not return to its no-policy state within 1.5s: 1 cell(s) the previous policies blocked are "
        "still not allowed (shop/web → shop/api:8080/TCP). A policy of an earlier scenario is still in force; "
        "no verdict is given on top of it."
    )
    # Every round of the wait saw the cell dropped; the open scenario's step never ran.
    assert all(r == ["dropped"] for r in web_to_api(cluster, cluster.rounds[after_first:]))
    assert len(cluster.rounds) > after_first


def test_within_a_step_a_cell_counts_once_seen_in_its_new_state(tmp_path: Path) -> None:
    """A step denies ingress to shop/api while its (wrong) intent says everything
    stays allowed. The first round still sees the earlier state and matches that
    intent; the cell the model says flips is probed again until the CNI has
    programmed the deny, and the step fails, as it must."""
    (tmp_path / "deny-api.yaml").write_text(DENY_API)
    wrong = scenario(
        tmp_path,
        "wrong-intent",
        """\
        steps:
          - name: open
            expect: {default: allowed}
          - name: deny-api
            apply: [deny-api.yaml]
            expect: {default: allowed}
        """,
    )
    cluster = LateCalico(lag=2)
    with pipeline_on(cluster, deadline=3.0) as pipeline:
        result = pipeline.run_scenario(wrong)
    open_step, deny_step = result.steps
    assert open_step.ok and not deny_step.ok
    (mismatch,) = deny_step.comparison.mismatches
    assert (str(mismatch.cell), mismatch.observed.outcome) == ("shop/web → shop/api:8080/TCP", Outcome.BLOCKED)
    assert mismatch.cell.port == PortProtocol.parse("8080/TCP")
    seen = web_to_api(cluster, cluster.rounds)
    # open: one round; deny-api: its first round still sees the open state and
    # matches the wrong intent, then the flipped cell alone until the CNI drops it.
    assert seen[:4] == [["passed"], ["passed"], ["passed"], ["dropped"]]
    assert [len(r) for r in cluster.rounds[:4]] == [2, 2, 1, 1]
