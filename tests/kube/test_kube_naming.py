"""Namespace naming on a shared cluster, and the policy rewrite that keeps a
policy's meaning there."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from harness.core.errors import HarnessError
from harness.core.policy import parse_policy
from harness.core.selectors import parse_selector
from harness.core.topology import NAMESPACE_NAME_LABEL
from harness.kube.naming import NamespaceMap

POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-dns", "namespace": "shop", "resourceVersion": "12", "uid": "u"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": ["dev", "test"]},
                                {"key": "env", "operator": "In", "values": ["prod"]},
                            ]
                        }
                    },
                    {"podSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "shop"}}},
                ]
            },
        ],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system", "team": "a"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    },
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                ],
                "ports": [{"protocol": "UDP", "port": 53}],
            },
        ],
    },
    "status": {},
}


def test_kind_keeps_names_and_policies_as_written() -> None:
    names = NamespaceMap()
    assert names.identity
    assert names.real("kube-system") == "kube-system"
    out = names.translate_policy(POLICY)
    assert out["spec"] == POLICY["spec"]
    assert out["metadata"] == {"name": "allow-dns", "namespace": "shop"}
    assert "status" not in out


def test_shared_cluster_names_are_prefixed_and_recognisable() -> None:
    names = NamespaceMap("ab12cd")
    assert names.real("shop") == "nph-ab12cd-shop"
    assert names.scenario("nph-ab12cd-shop") == "shop"
    assert names.owns("nph-ab12cd-shop") and not names.owns("shop") and not names.owns("nph-other-shop")
    long = "a" * 60
    real = names.real(long)
    assert len(real) <= 63 and real.startswith("nph-ab12cd-") and real != names.real("a" * 59)
    assert names.scenario(real) == long
    with pytest.raises(ValueError):
        NamespaceMap("Not-Valid")


def test_name_label_selectors_follow_the_rename_and_nothing_else() -> None:
    out = NamespaceMap("r1").translate_policy(POLICY)
    assert out["metadata"]["namespace"] == "nph-r1-shop"
    ingress = out["spec"]["ingress"][0]["from"]
    assert ingress[0]["namespaceSelector"]["matchExpressions"] == [
        {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": ["nph-r1-dev", "nph-r1-test"]},
        {"key": "env", "operator": "In", "values": ["prod"]},
    ]
    # A pod label that happens to use the same key is a pod label: untouched.
    assert ingress[1] == {"podSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "shop"}}}
    egress = out["spec"]["egress"][0]["to"]
    assert egress[0]["namespaceSelector"] == {"matchLabels": {NAMESPACE_NAME_LABEL: "nph-r1-kube-system", "team": "a"}}
    assert egress[0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert egress[1] == {"ipBlock": {"cidr": "10.0.0.0/8"}}
    # The input is not modified.
    assert POLICY["metadata"]["namespace"] == "shop"


def test_translated_policy_is_still_a_valid_policy() -> None:
    out = NamespaceMap("r1").translate_policy(POLICY)
    parsed = parse_policy(out)
    assert parsed.namespace == "nph-r1-shop"
    kubernetes_validate.validate(out, "1.33.0", strict=True)


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {NAMESPACE_NAME_LABEL: "shop"}},
        {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": ["shop", "dev"]}]},
        {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": ["shop"]}]},
        {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "Exists"}]},
        {"matchLabels": {"env": "prod"}},
        {},
    ],
)
def test_a_selector_picks_the_same_namespaces_before_and_after_the_rename(selector: dict[str, Any]) -> None:
    names = NamespaceMap("r1")
    namespaces = {"shop": {"env": "prod"}, "dev": {"env": "dev"}, "kube-system": {}}
    policy = {**POLICY, "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": selector}]}]}}
    translated = parse_selector(names.translate_policy(policy)["spec"]["ingress"][0]["from"][0]["namespaceSelector"])
    original = parse_selector(selector)
    for name, labels in namespaces.items():
        scenario_labels = {**labels, NAMESPACE_NAME_LABEL: name}
        real_labels = {**names.namespace_labels(labels), NAMESPACE_NAME_LABEL: names.real(name)}
        assert original.matches(scenario_labels) == translated.matches(real_labels), name


def test_the_api_server_owns_the_name_label() -> None:
    assert NamespaceMap("r1").namespace_labels({NAMESPACE_NAME_LABEL: "shop", "env": "prod"}) == {"env": "prod"}


def test_reserved_names_get_a_namespace_of_their_own_and_others_keep_theirs() -> None:
    names = NamespaceMap(reserved=("kube-system", "calico-system"))
    assert not names.identity
    assert names.real("kube-system") == "nph-kube-system" and names.mapped("kube-system")
    assert names.real("shop") == "shop" and not names.mapped("shop")
    assert names.scenario("nph-kube-system") == "kube-system" and names.scenario("shop") == "shop"
    policy: dict[str, Any] = {
        **POLICY,
        "metadata": {"name": "dns", "namespace": "shop"},
        "spec": {
            "podSelector": {},
            "egress": [
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}}},
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": ["shop", "kube-system"]}
                                ]
                            }
                        },
                    ]
                }
            ],
        },
    }
    out = names.translate_policy(policy)
    assert out["metadata"]["namespace"] == "shop"
    peers = out["spec"]["egress"][0]["to"]
    assert peers[0]["namespaceSelector"] == {"matchLabels": {NAMESPACE_NAME_LABEL: "nph-kube-system"}}
    assert peers[1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["shop", "nph-kube-system"]


def test_a_scenario_namespace_named_like_a_mapped_one_is_refused() -> None:
    with pytest.raises(HarnessError, match="namespace nph-kube-system: the harness uses that name on this cluster"):
        NamespaceMap(reserved=("kube-system",)).real("nph-kube-system")
