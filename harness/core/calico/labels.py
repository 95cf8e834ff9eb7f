"""The labels Calico's selectors see, and the whole selector Calico builds for a policy
or a rule side from its fields.

A pod's workload endpoint carries the pod's labels and
``projectcalico.org/namespace``, ``projectcalico.org/orchestrator: k8s`` and
``projectcalico.org/serviceaccount`` (projectcalico/calico
``libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go``), and inherits
its namespace's labels prefixed with ``pcns.`` (with ``pcns.projectcalico.org/name``)
and its service account's prefixed with ``pcsa.`` (``conversion.go``, NamespaceToProfile
and ServiceAccountToProfile). A namespace selector is a selector of those ``pcns.``
labels (``updateprocessors/selectors.go``).
"""

from __future__ import annotations

from harness.core.calico.selector import All, Compare, Comparison, Has, Node, map_keys
from harness.core.calico.selector import And as SelectorAnd
from harness.core.calico.selector import Not as SelectorNot
from harness.core.calico.selector import Or as SelectorOr
from harness.core.selectors import LabelSelector, Requirement
from harness.core.topology import NAMESPACE_NAME_LABEL

#: Labels Calico gives every pod's workload endpoint, besides the pod's own
#: (``libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go``).
LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
#: A namespace's name as a namespaceSelector sees it (``conversion.go``, NamespaceToProfile).
LABEL_NAME = "projectcalico.org/name"
#: Prefixes of the namespace and service-account labels an endpoint inherits.
NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."
#: Keys whose values are namespace names: in a selector of endpoints, and in a
#: namespace selector.
ENDPOINT_NAMESPACE_KEYS = frozenset({LABEL_NAMESPACE, NAMESPACE_PREFIX + NAMESPACE_NAME_LABEL, NAMESPACE_PREFIX + LABEL_NAME})
NAMESPACE_NAME_KEYS = frozenset({NAMESPACE_NAME_LABEL, LABEL_NAME})
#: The harness's pods run as the namespace's default service account (the API
#: server's ServiceAccount admission sets it), on Kubernetes.
_CONSTANT_LABELS = {
    LABEL_ORCHESTRATOR: "k8s",
    LABEL_SERVICE_ACCOUNT: "default",
    SERVICE_ACCOUNT_PREFIX + LABEL_NAME: "default",
}


def endpoint_selector(selector: Node, namespace_selector: Node | None, namespace: str | None) -> Node:
    """The whole endpoint selector of a rule side or a policy, as Calico builds it
    (updateprocessors/rules.go getEndpointSelector, networkpolicyprocessor.go,
    globalnetworkpolicyprocessor.go)."""
    if namespace_selector is not None:
        # A namespace selector overrides the policy's own namespace.
        return SelectorAnd((_every_namespace(map_keys(namespace_selector, lambda k: NAMESPACE_PREFIX + k)), selector))
    if namespace is not None:
        return SelectorAnd((Comparison(LABEL_NAMESPACE, Compare.EQ, namespace), selector))
    return selector


def _every_namespace(node: Node) -> Node:
    """Calico replaces all() in a namespace selector by has(projectcalico.org/namespace):
    every pod of every namespace, and no host endpoint."""
    if isinstance(node, All):
        return Has(LABEL_NAMESPACE)
    if isinstance(node, SelectorAnd):
        return SelectorAnd(tuple(_every_namespace(op) for op in node.operands))
    if isinstance(node, SelectorOr):
        return SelectorOr(tuple(_every_namespace(op) for op in node.operands))
    if isinstance(node, SelectorNot):
        return SelectorNot(_every_namespace(node.operand))
    return node


def split_requirements(conjunction: tuple[Requirement, ...]) -> tuple[LabelSelector, LabelSelector] | None:
    """A conjunction over an endpoint's Calico labels as (pod selector, namespace
    selector) over Kubernetes labels, or None when it can never hold."""
    pod: list[Requirement] = []
    namespace: list[Requirement] = []
    for req in conjunction:
        key = req.key
        if key == LABEL_NAMESPACE or key == NAMESPACE_PREFIX + LABEL_NAME:
            namespace.append(Requirement(NAMESPACE_NAME_LABEL, req.operator, req.values))
        elif key.startswith(NAMESPACE_PREFIX):
            namespace.append(Requirement(key.removeprefix(NAMESPACE_PREFIX), req.operator, req.values))
        elif key in _CONSTANT_LABELS or key.startswith(SERVICE_ACCOUNT_PREFIX):
            value = _CONSTANT_LABELS.get(key)
            if not req.matches({key: value} if value is not None else {}):
                return None
        else:
            pod.append(req)
    return LabelSelector(match_expressions=tuple(pod)), LabelSelector(match_expressions=tuple(namespace))
