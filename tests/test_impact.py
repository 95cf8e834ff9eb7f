"""Change impact of a step: opened and closed cells, their grouping into patterns a
reviewer reads, the policy edits blamed for each group, and the changed lines of policy
files. Every model here is the real reference model on parsed manifests."""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.core.addressing import plan_addresses
from harness.core.calico.conversion import model_policies
from harness.core.calico.enforcement import EnforcedPolicies, enforce
from harness.core.calico.policy import parse_staged_policy
from harness.core.cluster_policy import ClusterPolicy
from harness.core.matrix import Cell
from harness.core.policy import NetworkPolicy, PolicyType, parse_policy
from harness.core.settings import ImplementationSettings, SelfTraffic
from harness.core.topology import ExternalHost, NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology
from harness.engine.impact import (
    MAX_DIFF_LINES,
    MAX_LISTED,
    Cause,
    CauseKind,
    Change,
    Edit,
    ImpactGroup,
    ImpactSide,
    StepImpact,
    compute_impact,
    file_diff,
    policy_diffs,
    source_file,
)
from harness.model import ReferenceModel
from tests.manifests import cnp

TCP_3306 = PortProtocol(3306, Protocol.TCP)
TCP_80 = PortProtocol(80, Protocol.TCP)
TCP_81 = PortProtocol(81, Protocol.TCP)


def netpol(name: str, namespace: str, spec: Mapping[str, Any], source: str = "") -> NetworkPolicy:
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }
    return parse_policy(manifest, source or f"policies/{name}.yaml")


def labels(**kv: str) -> dict[str, Any]:
    return {"matchLabels": kv}


def side(topology: Topology, policies: Sequence[NetworkPolicy], **kwargs: Any) -> ImpactSide:
    settings_ = kwargs.pop("model_settings", None)
    return ImpactSide(ReferenceModel(topology, policies, plan_addresses(topology), settings_), **kwargs)


SHOP = Topology(
    (NamespaceSpec("production", {"env": "prod"}), NamespaceSpec("staging")),
    (
        PodSpec("production", "db", {"app": "db"}, (PortSpec(3306),)),
        PodSpec("production", "backend", {"app": "backend"}, (PortSpec(80), PortSpec(81))),
        PodSpec("production", "web", {"app": "web"}, (PortSpec(80), PortSpec(81))),
        PodSpec("staging", "backend", {"app": "backend"}, (PortSpec(80), PortSpec(81))),
    ),
    (ExternalHost("payments", ipaddress.IPv4Address("203.0.113.10"), (PortSpec(443),)),),
)
DB_NOTHING = netpol("db", "production", {"podSelector": labels(app="db")})
DB_ALL_PRODUCTION = netpol("db", "production", {"podSelector": labels(app="db"), "ingress": [{"from": [{"podSelector": {}}]}]})


def one(impact: StepImpact) -> ImpactGroup:
    (group,) = impact.groups
    return group


def test_opening_a_database_to_its_namespace_reads_as_one_line() -> None:
    impact = compute_impact(side(SHOP, [DB_NOTHING]), side(SHOP, [DB_ALL_PRODUCTION]))
    group = one(impact)
    assert group.summary() == (
        "production/* → production/db:3306/TCP: opened for 2 sources; caused by production/db (modified) now admits"
    )
    assert (impact.opened, impact.closed, group.cells) == (2, 0, 2)
    assert group.causes == (Cause("production/db", CauseKind.ADMITS, Edit.MODIFIED),)
    assert group.expect_rule() == {"from": ["production/*"], "to": ["production/db"], "port": "3306/TCP", "result": "allowed"}
    assert sorted(impact.cells(Change.OPENED)) == [
        Cell("production/backend", "production/db", TCP_3306),
        Cell("production/web", "production/db", TCP_3306),
    ]
    assert list(impact.cells(Change.CLOSED)) == []
    assert [(e.policy, e.edit) for e in impact.edits] == [("production/db", Edit.MODIFIED)]
    assert impact.summary() == "2 opened, 0 closed"


def test_a_default_deny_closes_a_namespace_and_merges_ports() -> None:
    deny = netpol("deny", "production", {"podSelector": {}})
    impact = compute_impact(side(SHOP, []), side(SHOP, [deny], ports=(TCP_80, TCP_81)))
    group = one(impact)
    assert group.change is Change.CLOSED and group.ports == (TCP_80, TCP_81)
    assert group.sources.patterns == ("*/*",) and group.destinations.patterns == ("production/*",)
    assert group.cells == 12 and impact.closed == 12  # 2 destinations x 3 other pods x 2 ports
    assert group.summary() == (
        "*/* → production/* on 80/TCP, 81/TCP: closed for 4 sources to 2 destinations (12 cells); "
        "caused by production/deny (added) now isolates"
    )
    assert group.expect_rule() is None  # one rule per port


def test_each_kind_of_cause() -> None:
    admits_backend = netpol(
        "db", "production", {"podSelector": labels(app="db"), "ingress": [{"from": [{"podSelector": labels(app="backend")}]}]}
    )
    # Removing the only isolating policy: no longer isolates.
    lifted = compute_impact(side(SHOP, [admits_backend]), side(SHOP, []))
    assert one(lifted).causes == (Cause("production/db", CauseKind.STOPS_ISOLATING, Edit.REMOVED),)
    assert one(lifted).sources.patterns == ("production/web", "staging/backend")
    # Narrowing a policy: no longer admits.
    narrowed = compute_impact(side(SHOP, [admits_backend]), side(SHOP, [DB_NOTHING]))
    assert one(narrowed).causes == (Cause("production/db", CauseKind.STOPS_ADMITTING, Edit.MODIFIED),)
    assert one(narrowed).summary().startswith("production/backend → production/db:3306/TCP: closed for 1 source;")
    # A second policy admitting more, next to one that isolates: now admits.
    extra = netpol(
        "db-web", "production", {"podSelector": labels(app="db"), "ingress": [{"from": [{"podSelector": labels(app="web")}]}]}
    )
    widened = compute_impact(side(SHOP, [admits_backend]), side(SHOP, [admits_backend, extra]))
    assert one(widened).causes == (Cause("production/db-web", CauseKind.ADMITS, Edit.ADDED),)


def tiered(topology: Topology, policies: Sequence[NetworkPolicy], cluster: Sequence[ClusterPolicy], **kwargs: Any) -> ImpactSide:
    model = ReferenceModel(topology, policies, plan_addresses(topology), None, cluster)
    return ImpactSide(model, **kwargs)


PROD_SUBJECT = {"namespaces": labels(env="prod")}
FROM_STAGING = [{"namespaces": labels(**{"kubernetes.io/metadata.name": "staging"})}]


def test_cluster_policy_edits_are_causes() -> None:
    """An Admin Deny added closes cells even where a NetworkPolicy admits them;
    turning it into a Pass hands them back to the NetworkPolicies; a Baseline Deny
    counts only for pods no NetworkPolicy isolates."""

    def no_staging(action: str) -> ClusterPolicy:
        return cnp(
            "no-staging",
            "Admin",
            10,
            PROD_SUBJECT,
            source="guardrails/no-staging.yaml",
            ingress=[{"action": action, "from": FROM_STAGING}],
        )

    deny, passing = no_staging("Deny"), no_staging("Pass")
    ports = {"ports": (TCP_3306,)}
    added = compute_impact(tiered(SHOP, [], [], **ports), tiered(SHOP, [], [deny], **ports))
    assert one(added).summary() == (
        "staging/backend → production/db:3306/TCP: closed for 1 source; "
        "caused by ClusterNetworkPolicy/no-staging (added) now denies"
    )
    assert [(e.policy, e.edit, e.head_source) for e in added.edits] == [
        ("ClusterNetworkPolicy/no-staging", Edit.ADDED, "guardrails/no-staging.yaml")
    ]
    # Deny to Pass, with the database isolated by a NetworkPolicy that admits every
    # pod: the NetworkPolicy decides again, so the cell opens.
    db_all = netpol("db", "production", {"podSelector": labels(app="db"), "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    delegated = compute_impact(tiered(SHOP, [db_all], [deny], **ports), tiered(SHOP, [db_all], [passing], **ports))
    assert one(delegated).causes == (Cause("ClusterNetworkPolicy/no-staging", CauseKind.STOPS_DENYING, Edit.MODIFIED),)
    # The same Pass in front of a NetworkPolicy that admits nothing: nothing changes.
    assert not compute_impact(tiered(SHOP, [DB_NOTHING], [deny], **ports), tiered(SHOP, [DB_NOTHING], [passing], **ports)).changed
    # A Baseline Deny: the NetworkPolicy isolating the database overrides it.
    baseline = cnp(
        "default-deny",
        "Baseline",
        1,
        {"namespaces": {}},
        source="guardrails/default-deny.yaml",
        ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}],
    )
    base_added = compute_impact(tiered(SHOP, [db_all], [], **ports), tiered(SHOP, [db_all], [baseline], **ports))
    assert not base_added.changed
    web = {"ports": (TCP_80,)}
    closed = compute_impact(tiered(SHOP, [db_all], [], **web), tiered(SHOP, [db_all], [baseline], **web))
    assert {c for g in closed.groups for c in g.causes} == {
        Cause("ClusterNetworkPolicy/default-deny", CauseKind.DENIES, Edit.ADDED)
    }
    assert closed.closed == 9  # 3 pods serve 80/TCP, each probed from the 3 other pods
    assert not any(g.unexplained for g in closed.groups)


def test_egress_to_an_external_host() -> None:
    https = PortProtocol(443, Protocol.TCP)
    egress_deny = netpol("no-egress", "production", {"podSelector": labels(app="backend"), "policyTypes": ["Egress"]})
    to_payments = netpol(
        "to-payments",
        "production",
        {
            "podSelector": labels(app="backend"),
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
        },
    )
    impact = compute_impact(side(SHOP, [egress_deny], ports=(https,)), side(SHOP, [egress_deny, to_payments], ports=(https,)))
    group = one(impact)
    assert group.summary() == (
        "production/backend → payments:443/TCP: opened for 1 source; caused by production/to-payments (added) now admits"
    )


def test_labels_changed_by_the_scenario_blame_the_unchanged_policy_they_bring_in() -> None:
    deny_db = netpol("deny-db", "production", {"podSelector": labels(app="db")})
    relabelled = SHOP.with_pod_labels("production/web", {"app": "db"})
    impact = compute_impact(side(SHOP, [deny_db], ports=(TCP_80,)), side(relabelled, [deny_db], ports=(TCP_80,)))
    group = one(impact)
    assert group.destinations.patterns == ("production/web",) and group.change is Change.CLOSED
    assert group.causes == (Cause("production/deny-db", CauseKind.ISOLATES, Edit.UNCHANGED),)
    assert not group.unexplained and impact.edits == ()


def test_changes_no_policy_explains_are_marked() -> None:
    # Self traffic: Calico lets a pod reach itself whatever the policy; the scenario
    # switches that off and probes it.
    deny = netpol("deny", "production", {"podSelector": {}})
    before = side(SHOP, [deny], ports=(TCP_80,), probe_self=True)
    after = side(SHOP, [deny], ports=(TCP_80,), probe_self=True, model_settings=ImplementationSettings(SelfTraffic.POLICY))
    impact = compute_impact(before, after)
    assert [g.summary() for g in impact.groups] == [
        f"production/{pod} → production/{pod}:80/TCP: closed for 1 source; "
        "caused by a change of the scenario's labels, ports or settings"
        for pod in ("backend", "web")
    ]
    assert all(g.unexplained and g.causes == () for g in impact.groups)


def test_new_and_gone_cells() -> None:
    grown = Topology(
        SHOP.namespaces, (*SHOP.pods, PodSpec("staging", "web", {"app": "web"}, (PortSpec(80), PortSpec(81)))), SHOP.externals
    )
    impact = compute_impact(side(SHOP, [], ports=(TCP_80, TCP_81)), side(grown, [], ports=(TCP_80,)))
    # New: staging/web as a source of 80/TCP (3 destinations) and as a destination (4 sources).
    assert impact.new_cells == 3 + 4
    assert impact.gone_cells == 4 * 3 - 0 - 3  # 81/TCP is no longer probed: 4 sources x 3 destinations, less self cells
    assert not impact.changed and impact.groups == ()
    new = compute_impact(None, side(SHOP, [DB_NOTHING], ports=(TCP_3306,)))
    assert new.new and new.new_cells == 3 and [(e.policy, e.edit) for e in new.edits] == [("production/db", Edit.ADDED)]
    assert new.summary() == "new: 3 cells, no base to compare with"


def test_where_a_policy_is_written_is_no_edit() -> None:
    moved = netpol("db", "production", {"podSelector": labels(app="db")}, source="policies/renamed.yaml")
    impact = compute_impact(side(SHOP, [DB_NOTHING]), side(SHOP, [moved]))
    assert impact.edits == () and not impact.changed


def test_large_partial_namespaces_are_abridged() -> None:
    pods = [PodSpec("big", f"p{i:03d}", {"i": str(i)}, (PortSpec(80),)) for i in range(MAX_LISTED + 10)]
    pods.append(PodSpec("big", "target", {"app": "target"}, (PortSpec(80),)))
    topology = Topology((NamespaceSpec("big"),), tuple(pods))
    first_three = {"matchExpressions": [{"key": "i", "operator": "In", "values": ["0", "1", "2"]}]}
    policy = netpol("t", "big", {"podSelector": labels(app="target"), "ingress": [{"from": [{"podSelector": first_three}]}]})
    group = one(compute_impact(side(topology, [], ports=(TCP_80,)), side(topology, [policy], ports=(TCP_80,))))
    closed = MAX_LISTED + 10 - 3
    assert group.sources.count == closed and group.cells == closed
    assert len(group.sources.patterns) == MAX_LISTED and group.sources.omitted == closed - MAX_LISTED
    assert group.sources.patterns[0] == "big/p003"
    assert group.sources.text() == f"big/p003, big/p004, big/p005, big/p006 and {closed - 4} more"
    assert group.expect_rule() is None


def test_names_report_what_a_translated_policy_stands_for() -> None:
    """Audit mode: the model with the enforced policies against the model with the
    staged ones enforced too; 'closed' reads 'would block'."""
    staged = parse_staged_policy(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "StagedGlobalNetworkPolicy",
            "metadata": {"name": "deny-prod"},
            "spec": {"selector": "app == 'db'", "namespaceSelector": "env == 'prod'"},
        }
    )
    enforced = EnforcedPolicies()
    after, _ = enforce(enforced, [staged])
    translated = model_policies(after, SHOP)
    names = {ref: str(key) for ref, key in translated.origins.items()}
    impact = compute_impact(side(SHOP, []), side(SHOP, translated.policies, names=names))
    group = one(impact)
    assert group.summary() == (
        "*/* → production/db:3306/TCP: closed for 3 sources; caused by GlobalNetworkPolicy deny-prod (added) now isolates"
    )
    assert [(e.policy, e.edit) for e in impact.edits] == [("GlobalNetworkPolicy deny-prod", Edit.ADDED)]


def test_the_json_form() -> None:
    impact = compute_impact(side(SHOP, [DB_NOTHING]), side(SHOP, [DB_ALL_PRODUCTION]))
    data = json.loads(json.dumps(impact.to_json()))
    assert data["opened"] == 2 and data["closed"] == 0 and not data["new"]
    (group,) = data["groups"]
    assert group["sources"] == {"patterns": ["production/*"], "count": 2, "omitted": 0}
    assert group["causes"] == [{"policy": "production/db", "edit": "modified", "effect": "now admits"}]
    assert group["summary"] == one(impact).summary()
    assert data["edits"] == [
        {"policy": "production/db", "edit": "modified", "base_source": "policies/db.yaml", "head_source": "policies/db.yaml"}
    ]


# -- properties on random changes ---------------------------------------------------------

NS = ("x", "y")
PODS = ("a", "b", "c")
RANDOM_TOPOLOGY = Topology(
    tuple(NamespaceSpec(ns, {"ns": ns}) for ns in NS),
    tuple(PodSpec(ns, p, {"pod": p}, (PortSpec(80, Protocol.TCP, "http"), PortSpec(81))) for ns in NS for p in PODS),
    (ExternalHost("ext", ipaddress.IPv4Address("203.0.113.5"), (PortSpec(80),)),),
)
KEYS = (TCP_80, TCP_81)

peers = st.one_of(
    st.builds(lambda p: {"podSelector": labels(pod=p)}, st.sampled_from(PODS)),
    st.builds(lambda n: {"namespaceSelector": labels(ns=n)}, st.sampled_from(NS)),
    st.just({"ipBlock": {"cidr": "0.0.0.0/0"}}),
    st.just({"podSelector": {}}),
)
ports = st.sampled_from([[], [{"port": 80}], [{"port": "http"}], [{"port": 81}]])


@st.composite
def policies(draw: st.DrawFn) -> NetworkPolicy:
    name = draw(st.sampled_from(["p1", "p2", "p3"]))
    namespace = draw(st.sampled_from(NS))
    spec: dict[str, Any] = {"podSelector": draw(st.sampled_from([{}, labels(pod="a"), labels(pod="b")]))}
    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    spec["policyTypes"] = types
    if "Ingress" in types:
        spec["ingress"] = draw(
            st.lists(st.builds(lambda f, p: {"from": f, "ports": p}, st.lists(peers, max_size=2), ports), max_size=2)
        )
    if "Egress" in types:
        spec["egress"] = draw(
            st.lists(st.builds(lambda t, p: {"to": t, "ports": p}, st.lists(peers, max_size=2), ports), max_size=2)
        )
    return netpol(name, namespace, spec)


def unique(items: Sequence[NetworkPolicy]) -> list[NetworkPolicy]:
    return list({p.ref: p for p in items}.values())


def in_group(group: ImpactGroup, cell: Cell) -> bool:
    return (
        cell.port in group.ports
        and any(fnmatch.fnmatchcase(cell.source, p) for p in group.sources.patterns)
        and any(fnmatch.fnmatchcase(cell.destination, p) for p in group.destinations.patterns)
    )


def single(topology: Topology, policy: NetworkPolicy | None) -> ReferenceModel:
    return ReferenceModel(topology, [policy] if policy is not None else [], plan_addresses(topology))


def expected_causes(base: ReferenceModel, head: ReferenceModel, cell: Cell, change: Change) -> set[tuple[str, CauseKind]]:
    """The causes of one cell by the definitions, computed with one model per policy."""
    s = base.pod_index[cell.source]
    d = base.dest_index[cell.destination]
    before = {p.ref: p for p in base.policies}
    after = {p.ref: p for p in head.policies}
    out: set[tuple[str, CauseKind]] = set()
    sides = [(PolicyType.EGRESS, s, d)]
    if "/" in cell.destination:
        sides.append((PolicyType.INGRESS, d, s))
    for direction, subject, other in sides:
        index = 1 if direction is PolicyType.EGRESS else 0
        allowed_b = base.sides(cell.port)[index][subject, other]
        allowed_h = head.sides(cell.port)[index][subject, other]
        iso = "egress_isolated" if direction is PolicyType.EGRESS else "ingress_isolated"
        iso_b, iso_h = getattr(base, iso)[subject], getattr(head, iso)[subject]
        if change is Change.OPENED and allowed_b or change is Change.CLOSED and allowed_h:
            continue  # this side did not flip
        for ref in dict.fromkeys([*before, *after]):
            if before.get(ref) == after.get(ref):
                continue
            mb, mh = single(RANDOM_TOPOLOGY, before.get(ref)), single(RANDOM_TOPOLOGY, after.get(ref))
            sel_b, sel_h = bool(getattr(mb, iso)[subject]), bool(getattr(mh, iso)[subject])
            adm_b = sel_b and bool(mb.sides(cell.port)[index][subject, other])
            adm_h = sel_h and bool(mh.sides(cell.port)[index][subject, other])
            if change is Change.OPENED:
                if not iso_h and sel_b and not sel_h:
                    out.add((ref, CauseKind.STOPS_ISOLATING))
                if iso_h and adm_h and not adm_b:
                    out.add((ref, CauseKind.ADMITS))
            else:
                if not iso_b and sel_h and not sel_b:
                    out.add((ref, CauseKind.ISOLATES))
                if iso_b and adm_b and not adm_h:
                    out.add((ref, CauseKind.STOPS_ADMITTING))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(policies(), max_size=3), st.lists(policies(), max_size=3))
def test_random_changes(base_policies: list[NetworkPolicy], head_policies: list[NetworkPolicy]) -> None:
    base_side = side(RANDOM_TOPOLOGY, unique(base_policies), ports=KEYS)
    head_side = side(RANDOM_TOPOLOGY, unique(head_policies), ports=KEYS)
    impact = compute_impact(base_side, head_side)
    base, head = base_side.model, head_side.model
    changed: dict[Cell, Change] = {}
    for key in KEYS:
        for source in RANDOM_TOPOLOGY.pods:
            for destination in RANDOM_TOPOLOGY.serving(key):
                if source.id == destination.id:
                    continue
                was, now = base.allowed(source.id, destination.id, key), head.allowed(source.id, destination.id, key)
                if was != now:
                    changed[Cell(source.id, destination.id, key)] = Change.OPENED if now else Change.CLOSED
    assert impact.opened == sum(1 for c in changed.values() if c is Change.OPENED)
    assert impact.closed == sum(1 for c in changed.values() if c is Change.CLOSED)
    assert set(impact.cells(Change.OPENED)) == {c for c, ch in changed.items() if ch is Change.OPENED}
    assert sum(g.cells for g in impact.groups) == len(changed)
    # Every changed cell belongs to exactly one group of its change; every probed cell a
    # group's patterns match has changed that way.
    for cell, change in changed.items():
        owners = [g for g in impact.groups if g.change is change and in_group(g, cell)]
        assert len(owners) == 1, (cell, [g.summary() for g in owners])
    for group in impact.groups:
        matched = [
            Cell(s.id, d.id, key)
            for key in group.ports
            for s in RANDOM_TOPOLOGY.pods
            for d in RANDOM_TOPOLOGY.serving(key)
            if s.id != d.id and in_group(group, Cell(s.id, d.id, key))
        ]
        assert len(matched) == group.cells and all(changed.get(c) is group.change for c in matched)
        # Causes: the union of each cell's causes by definition; no change goes unexplained.
        want = set().union(*(expected_causes(base, head, c, group.change) for c in matched))
        assert {(c.policy, c.kind) for c in group.causes} == want
        assert not group.unexplained and want


# -- changed lines of policy files --------------------------------------------------------


def test_file_diff() -> None:
    old = "a: 1\nb: 2\nc: 3\n"
    new = "a: 1\nb: 20\nc: 3\nd: 4\n"
    diff = file_diff("policies/db.yaml", old, "policies/db.yaml", new)
    assert diff.lines[:2] == ("--- a/policies/db.yaml", "+++ b/policies/db.yaml")
    assert "-b: 2" in diff.lines and "+b: 20" in diff.lines and "+d: 4" in diff.lines
    assert (diff.added, diff.removed, diff.truncated) == (2, 1, 0)
    created = file_diff(None, None, "policies/new.yaml", "x: 1\n")
    assert created.lines[:2] == ("--- /dev/null", "+++ b/policies/new.yaml") and created.added == 1
    deleted = file_diff("policies/old.yaml", "x: 1\n", None, None)
    assert deleted.lines[1] == "+++ /dev/null" and deleted.removed == 1
    renamed = file_diff("policies/old.yaml", old, "policies/new.yaml", old)
    assert renamed.lines == () and renamed.text() == ""


def test_file_diff_is_bounded() -> None:
    new = "".join(f"line {i}\n" for i in range(MAX_DIFF_LINES * 2))
    diff = file_diff("p.yaml", "", "p.yaml", new)
    assert len(diff.lines) == MAX_DIFF_LINES and diff.added == MAX_DIFF_LINES * 2
    assert diff.truncated == MAX_DIFF_LINES * 2 + 3 - MAX_DIFF_LINES  # two headers and one hunk line
    assert diff.text().endswith(f"... {diff.truncated} more lines")
    huge = file_diff("p.yaml", "x\n" * 30_000, "p.yaml", "y\n")
    assert huge.too_large and huge.lines == () and "too large" in huge.text()


def test_policy_diffs_follow_the_files_the_edits_come_from() -> None:
    assert source_file("policies/all.yaml (document 2)") == "policies/all.yaml"
    assert source_file("policies/one.yaml") == "policies/one.yaml"
    base = {"policies/db.yaml": "a: 1\n", "policies/all.yaml": "x: 1\n"}
    head = {"policies/database.yaml": "a: 2\n", "policies/all.yaml": "x: 2\n"}
    db_before = netpol("db", "production", {"podSelector": {}}, source="policies/db.yaml")
    db_after = netpol("db", "production", {"podSelector": labels(app="db")}, source="policies/database.yaml")
    one_doc = netpol("one", "production", {"podSelector": {}}, source="policies/all.yaml (document 1)")
    two_doc = netpol("two", "production", {"podSelector": {}}, source="policies/all.yaml (document 2)")
    impact = compute_impact(side(SHOP, [db_before]), side(SHOP, [db_after, one_doc, two_doc]))
    diffs = policy_diffs(impact.edits, base.get, head.get)
    assert set(diffs) == {("policies/db.yaml", "policies/database.yaml"), (None, "policies/all.yaml")}
    renamed = diffs[("policies/db.yaml", "policies/database.yaml")]
    assert renamed.lines[:2] == ("--- a/policies/db.yaml", "+++ b/policies/database.yaml") and renamed.added == 1
    assert diffs[(None, "policies/all.yaml")].lines[0] == "--- /dev/null"


@pytest.mark.parametrize("ports", [None, (TCP_80,)])
def test_the_probed_ports_default_to_every_served_port(ports: tuple[PortProtocol, ...] | None) -> None:
    deny = netpol("deny", "staging", {"podSelector": {}})
    impact = compute_impact(side(SHOP, [], ports=ports), side(SHOP, [deny], ports=ports))
    assert {p for g in impact.groups for p in g.ports} == ({TCP_80, TCP_81} if ports is None else {TCP_80})
