"""Several CNI versions in one run: variants, ordering, in-place upgrades and the
version-to-version differences.

kind cannot run on this machine, so the end-to-end tests put a stand-in for the kind
backend module behind ``--backend kind``: the model backend, told which Calico
version it "runs", with a behaviour that differs between versions. Everything else
(collection, ordering, option overlay, upgrade calls, summaries) is the real code.
"""

from __future__ import annotations

import textwrap

import pytest

from harness.backends.variants import DEFAULT_VARIANT, BackendVariant, VariantOptions, calico_variants
from harness.core.matrix import Cell, Observation, Outcome, ReachabilityMatrix
from harness.core.topology import PortProtocol
from harness.engine.variants import variant_changes

CELL = Cell("x/a", "x/b", PortProtocol.parse("80/TCP"))


def test_one_version_needs_no_variant() -> None:
    assert calico_variants(None, None) == [DEFAULT_VARIANT]
    assert calico_variants(["3.31"], "c") == [DEFAULT_VARIANT]


def test_each_version_gets_a_label_and_its_own_cluster() -> None:
    variants = calico_variants(["3.30", "v3.31.7"], "ci")
    assert [v.label for v in variants] == ["calico-3.30", "calico-v3.31.7"]
    assert variants[0].options == {"calico_version": ["3.30"], "cluster_name": "ci-3-30"}
    assert variants[1].options == {"calico_version": ["v3.31.7"], "cluster_name": "ci-v3-31-7"}


def test_an_upgrade_keeps_one_cluster() -> None:
    variants = calico_variants(["3.30", "3.31"], None, separate_clusters=False)
    assert all("cluster_name" not in v.options for v in variants)


def test_variant_options_lay_over_the_command_line() -> None:
    class CommandLine:
        def getoption(self, name: str, default: object = None) -> object:
            return {"calico_version": ["3.29"], "probe_timeout": 2.0}.get(name, default)

    options = VariantOptions(CommandLine(), BackendVariant("calico-3.31", {"calico_version": ["3.31"]}))
    assert options.getoption("calico_version") == ["3.31"]
    assert options.getoption("probe_timeout") == 2.0
    assert options.getoption("missing", "fallback") == "fallback"


def test_changes_name_each_cell_whose_outcome_differs() -> None:
    other = Cell("x/b", "x/a", PortProtocol.parse("80/TCP"))
    axes = ("x/a", "x/b"), ("x/a", "x/b"), (PortProtocol.parse("80/TCP"),)
    before = [("main", ReachabilityMatrix(*axes, {CELL: Observation(Outcome.ALLOWED), other: Observation(Outcome.BLOCKED)}))]
    after = [
        ("main", ReachabilityMatrix(*axes, {CELL: Observation(Outcome.BLOCKED, "timeout"), other: Observation(Outcome.BLOCKED)}))
    ]
    changes = variant_changes("s", "calico-3.30", before, "calico-3.31", after)
    assert [c.line() for c in changes] == ["s/main: x/a → x/b:80/TCP calico-3.30 allowed, calico-3.31 blocked (timeout)"]
    assert variant_changes("s", "a", before, "b", before) == []


STAND_IN = '''
from harness.backends.base import BackendInfo
from harness.backends.model import ModelBackend
from harness.core.settings import ImplementationSettings

CALLS = []


class StandInKind(ModelBackend):
    """The model, as if Calico 3.31 stopped matching pod IPs with ipBlock."""

    name = "kind"

    def __init__(self, version):
        super().__init__()
        self.version = version
        CALLS.append(("create", version))

    def deploy(self, topology, settings):
        return super().deploy(topology, ImplementationSettings(settings.self_traffic, self.version != "3.31"))

    def upgrade_calico(self, version):
        CALLS.append(("upgrade", self.version, version))
        self.version = version

    def close(self):
        CALLS.append(("close", self.version))
        super().close()

    def info(self):
        return BackendInfo("kind", "calico", self.version)


def cluster_name(options):
    return options.getoption("cluster_name") or "netpol-harness"


def create(options, progress=None):
    return StandInKind(options.getoption("calico_version")[0])
'''

CONFTEST = """
import atexit

import harness.backends
import standin_kind

harness.backends.BACKENDS["kind"] = "standin_kind"
# After pytest has closed the backend, so the close call is listed too.
atexit.register(lambda: print("CALLS", standin_kind.CALLS))
"""

IPBLOCK = textwrap.dedent("""\
    description: ipBlock over the pod range admits pods where ipBlock matches pod IPs.
    namespaces:
      x: {pods: {a: {labels: {pod: a}, ports: [80/TCP]}, b: {labels: {pod: b}, ports: [80/TCP]}}}
    policies:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: from-pod-range, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: b}}
          ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16}}]}]
    expect: {default: allowed, rules: []}
    """)


@pytest.fixture
def kind_stand_in(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(standin_kind=STAND_IN)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nnetpol_scenarios = scenarios\n")
    pytester.mkdir("scenarios")
    (pytester.path / "scenarios" / "ipblock.yaml").write_text(IPBLOCK)
    (pytester.path / "scenarios" / "open.yaml").write_text(
        "description: open\nnamespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}\nexpect: {model: true}\n"
    )
    pytester.syspathinsert()
    return pytester


def test_each_scenario_runs_once_per_version_grouped_by_version(kind_stand_in: pytest.Pytester) -> None:
    result = kind_stand_in.runpytest_subprocess(
        "--backend", "kind", "--calico-version", "3.30", "--calico-version", "3.31", "-v", "-s"
    )
    result.stdout.fnmatch_lines(
        [
            "*ipblock.yaml::ipblock[[]calico-3.30] PASSED*",
            "*open.yaml::open[[]calico-3.30] PASSED*",
            "*ipblock.yaml::ipblock[[]calico-3.31] FAILED*",
            "*open.yaml::open[[]calico-3.31] PASSED*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*netpol-harness: differences between CNI versions*",
            "ipblock/main: x/a → x/b:80/TCP calico-3.30 allowed, calico-3.31 blocked",
            "1 cell(s) differ across 2 scenario/version pair(s) of calico-3.30, calico-3.31",
        ]
    )
    # One cluster per version, one at a time.
    result.stdout.fnmatch_lines(["CALLS [[]('create', '3.30'), ('close', '3.30'), ('create', '3.31'), ('close', '3.31')]"])


def test_upgrade_in_place_keeps_the_cluster_and_upgrades_it(kind_stand_in: pytest.Pytester) -> None:
    result = kind_stand_in.runpytest_subprocess(
        "--backend", "kind", "--calico-version", "3.30", "--calico-version", "3.31", "--calico-upgrade", "-s"
    )
    result.stdout.fnmatch_lines(["CALLS [[]('create', '3.30'), ('upgrade', '3.30', '3.31'), ('close', '3.31')]"])
    result.stdout.fnmatch_lines(["upgraded in place calico-3.30 → calico-3.31 in *s"])


def test_a_single_version_keeps_plain_test_ids(kind_stand_in: pytest.Pytester) -> None:
    result = kind_stand_in.runpytest_subprocess("--backend", "kind", "--calico-version", "3.30", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["scenarios/ipblock.yaml::ipblock", "scenarios/open.yaml::open"])
