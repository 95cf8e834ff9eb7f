"""How scenario namespaces are named on a cluster, and policies translated to match.

On the ``kind`` backend the harness owns the cluster, so a scenario's namespaces
keep their names and policies are applied exactly as written, except for the
namespaces the cluster's own components run in (kube-system, Calico's...): a
scenario's ``kube-system`` is ``nph-kube-system`` on the cluster, so that its
stand-in pods (a ``k8s-app: kube-dns`` "CoreDNS") never join the real kube-dns
Service, whose selector matches pods of its own namespace only, and its policies
never isolate the real CoreDNS. Policies are rewritten for those names as below.

On the ``existing`` backend the cluster is shared: every namespace the harness
creates is named ``nph-<run id>-<scenario namespace>``, so it is recognisable and
never collides. The API server sets the label ``kubernetes.io/metadata.name`` to
that real name, so a policy that selects namespaces by that label is rewritten to
select the real name: in ``namespaceSelector.matchLabels`` and in
``matchExpressions`` values (``In`` and ``NotIn``), and ``metadata.namespace``.
Every other label and selector is left alone, so a policy means on the cluster what
it means in the scenario.

Cluster-scoped policies are scoped to the run. A ClusterNetworkPolicy (or
AdminNetworkPolicy...) whose subject is ``namespaces: {}``, or a Calico
GlobalNetworkPolicy whose selector is ``all()``, would select every pod of the
cluster: kube-system's, Calico's own (its API server among them) and, on a shared
cluster, other tenants'. So every namespace of a run carries the label
``netpol-harness.io/run: <run id>`` (:data:`SCOPE_LABEL`, set by
:meth:`NamespaceMap.namespace_labels` at creation and on every relabel), and the
harness adds that label as a ``matchLabels`` term to every subject and every
``namespaces``/``pods`` peer of a cluster-scoped admin policy, and as an ``&&`` term
to the ``namespaceSelector`` of a GlobalNetworkPolicy. That changes nothing for the
scenario's endpoints: a label selector tests only the keys it names, no scenario may
name this one (refused), and every namespace of the run has it, so a selector picks
the same scenario namespaces with the term as without; only namespaces outside the
run, which the scenario does not declare and the reference model does not know, drop
out. Calico's rules (Allow only, docs/staged-policies.md) are not scoped: an allow
can only admit traffic, and a wider peer admits only traffic from pods no cell probes.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Collection, Mapping
from typing import Any

from harness.core.calico.policy import rename_namespaces
from harness.core.calico.selector import CalicoSelectorError, parse_calico_selector, walk
from harness.core.errors import HarnessError
from harness.core.topology import NAMESPACE_NAME_LABEL
from harness.kube.manifests import ANNOTATION_RUN

#: Prefix of every namespace the existing backend creates.
PREFIX = "nph"
_MAX_NAME = 63
#: Longest name of a cluster-scoped object (a DNS subdomain).
_MAX_OBJECT_NAME = 253
#: The label every namespace of a run carries, with the run id: what scopes the
#: run's cluster-scoped policies (an annotation of the same key marks the objects the run made).
SCOPE_LABEL = ANNOTATION_RUN


class ReservedLabel(HarnessError):
    """A scenario that uses the harness's own label, which it could not keep apart from the run's mark."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reason = (
            f"{SCOPE_LABEL} is the label the harness marks a run's namespaces with, to keep its cluster-scoped "
            "policies to them; a scenario cannot declare or select it"
        )
        super().__init__(f"{path}: {self.reason}")


_RUN_ID = re.compile(r"^[a-z0-9]{1,12}$")


class NamespaceMap:
    """Scenario namespace name ↔ namespace name on the cluster. With a run id every
    name gets its prefix; otherwise only the ``reserved`` names are mapped, to
    ``nph-<name>``."""

    def __init__(self, run_id: str | None = None, reserved: Collection[str] = (), scope: str | None = None) -> None:
        for given in (run_id, scope):
            if given is not None and not _RUN_ID.match(given):
                raise ValueError(f"run id {given!r} must be 1-12 lowercase letters or digits")
        self.prefix = f"{PREFIX}-{run_id}-" if run_id else ""
        self.reserved = frozenset(reserved)
        #: The run id that every namespace of the run is labelled with (SCOPE_LABEL);
        #: None: no scope label (the cluster backend sets it to its run id).
        self.scope = scope
        self._reverse: dict[str, str] = {}

    @property
    def identity(self) -> bool:
        return not self.prefix and not self.reserved

    def real(self, name: str) -> str:
        if not self.prefix:
            if name in self.reserved:
                return f"{PREFIX}-{name}"
            if name.startswith(f"{PREFIX}-") and name[len(PREFIX) + 1 :] in self.reserved:
                raise HarnessError(
                    f"namespace {name}: the harness uses that name on this cluster for the scenario's "
                    f"{name[len(PREFIX) + 1 :]} namespace; rename it"
                )
            return name
        real = self.prefix + name
        if len(real) > _MAX_NAME:
            # Keep it a valid DNS label and unique: shorten and add a digest of the full name.
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            real = f"{self.prefix}{name[: _MAX_NAME - len(self.prefix) - 9].rstrip('-')}-{digest}"
        self._reverse[real] = name
        return real

    def scenario(self, real: str) -> str | None:
        """The scenario name of a namespace this map produced, or None."""
        if not self.prefix:
            mapped = real[len(PREFIX) + 1 :] if real.startswith(f"{PREFIX}-") else None
            return mapped if mapped in self.reserved else real
        if real in self._reverse:
            return self._reverse[real]
        return real[len(self.prefix) :] if real.startswith(self.prefix) else None

    def owns(self, real: str) -> bool:
        return bool(self.prefix) and real.startswith(self.prefix)

    def mapped(self, name: str) -> bool:
        """Whether the scenario namespace ``name`` has another name on the cluster."""
        return self.real(name) != name

    def namespace_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Labels to set on a real namespace of the run: the declared ones (the API
        server owns the name label) and the run's scope label."""
        if SCOPE_LABEL in labels:
            raise ReservedLabel(f"namespace labels: {SCOPE_LABEL}")
        out = {k: v for k, v in labels.items() if k != NAMESPACE_NAME_LABEL}
        if self.scope is not None:
            out[SCOPE_LABEL] = self.scope
        return out

    @staticmethod
    def labels_to_give_back(labels: Mapping[str, str]) -> dict[str, str]:
        """The labels of a namespace the run borrows, to restore at the end: as found,
        without the name label (the API server's) and without a run's scope label,
        which only a run of the harness that was killed on the way can have left."""
        return {k: v for k, v in labels.items() if k not in (NAMESPACE_NAME_LABEL, SCOPE_LABEL)}

    def object_name(self, name: str) -> str:
        """The name of a cluster-scoped object on the cluster: on a shared cluster
        prefixed like the run's namespaces, so that runs never collide (the order of
        the run's own policies by name, which breaks priority ties, is kept)."""
        if not self.prefix:
            return name
        real = self.prefix + name
        if len(real) > _MAX_OBJECT_NAME:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            real = f"{self.prefix}{name[: _MAX_OBJECT_NAME - len(self.prefix) - 9].rstrip('-.')}-{digest}"
        return real

    def _marked(self, metadata: Mapping[str, Any], name: str, namespace: str | None) -> dict[str, Any]:
        """The metadata a client may set, with the run's mark (label and annotation)."""
        meta: dict[str, Any] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        labels = dict(metadata.get("labels") or {})
        annotations = dict(metadata.get("annotations") or {})
        if self.scope is not None:
            labels[SCOPE_LABEL] = self.scope
            annotations[ANNOTATION_RUN] = self.scope
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        return meta

    def _scoped(self, selector: object) -> dict[str, Any]:
        """A namespace selector of a cluster-scoped policy: names translated, and the
        run's scope term added."""
        out: dict[str, Any] = copy.deepcopy(dict(selector)) if isinstance(selector, Mapping) else {}
        if not self.identity:
            self._translate_selector(out)
        if self.scope is not None:
            out["matchLabels"] = {**(out.get("matchLabels") or {}), SCOPE_LABEL: self.scope}
        return out

    def translate_cluster_policy(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """A ClusterNetworkPolicy, AdminNetworkPolicy or BaselineAdminNetworkPolicy
        to apply: its name on this cluster (a BaselineAdminNetworkPolicy is a singleton
        named ``default`` and keeps it), the run's mark, and every subject and
        namespaces/pods peer scoped to the run's namespaces (see the module)."""
        meta = dict(manifest.get("metadata") or {})
        name = str(meta.get("name", ""))
        if manifest.get("kind") != "BaselineAdminNetworkPolicy":
            name = self.object_name(name)
        spec = _without_nulls(copy.deepcopy(dict(manifest.get("spec") or {})))
        subject = spec.get("subject")
        if isinstance(subject, dict):
            self._scope_selection(subject)
        for section, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(section) or []:
                for peer in (rule or {}).get(peers_key) or []:
                    if isinstance(peer, dict):
                        self._scope_selection(peer)
        return {
            "apiVersion": manifest.get("apiVersion"),
            "kind": manifest.get("kind"),
            "metadata": self._marked(meta, name, None),
            "spec": spec,
        }

    def _scope_selection(self, holder: dict[str, Any]) -> None:
        """``namespaces`` and ``pods`` (its ``namespaceSelector``) of a subject or peer."""
        if "namespaces" in holder:
            holder["namespaces"] = self._scoped(holder["namespaces"])
        pods = holder.get("pods")
        if isinstance(pods, dict):
            pods["namespaceSelector"] = self._scoped(pods.get("namespaceSelector"))

    def translate_calico_policy(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """A ``projectcalico.org/v3`` policy to apply (NetworkPolicy, GlobalNetworkPolicy
        or a staged kind): namespaces renamed (metadata and every selector value that
        names one), the run's mark, global ones named like the run's objects and their
        ``namespaceSelector`` scoped to the run's namespaces (see the module)."""
        kind = manifest.get("kind")
        meta = dict(manifest.get("metadata") or {})
        if kind == "StagedKubernetesNetworkPolicy":
            # A NetworkPolicy's spec under another kind: translated as a NetworkPolicy is.
            out = self.translate_policy(manifest)
        else:
            out = rename_namespaces(
                {k: v for k, v in manifest.items() if k in ("apiVersion", "kind", "metadata", "spec")}, self.real
            )
        namespace = out["metadata"].get("namespace")
        name = str(meta.get("name", ""))
        spec = out.setdefault("spec", {})
        if kind in ("GlobalNetworkPolicy", "StagedGlobalNetworkPolicy"):
            name = self.object_name(name)
            if self.scope is not None and not _is_staged_delete(spec):
                term = f"{SCOPE_LABEL} == '{self.scope}'"
                given = str(spec.get("namespaceSelector") or "").strip()
                spec["namespaceSelector"] = f"({given}) && {term}" if given else term
        out["metadata"] = self._marked(meta, name, str(namespace) if namespace is not None else None)
        return out

    def translate_policy(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest to apply: real namespace, name-label selectors rewritten,
        and only the fields a client may set."""
        out = {k: copy.deepcopy(v) for k, v in manifest.items() if k in ("apiVersion", "kind", "metadata", "spec")}
        meta = {k: v for k, v in dict(out.get("metadata") or {}).items() if k in ("name", "namespace", "labels", "annotations")}
        if "namespace" in meta:
            meta["namespace"] = self.real(str(meta["namespace"]))
        out["metadata"] = meta
        if self.identity:
            return out
        spec = out.get("spec") or {}
        for section, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(section) or []:
                for peer in (rule or {}).get(peers_key) or []:
                    selector = (peer or {}).get("namespaceSelector")
                    if isinstance(selector, dict):
                        self._translate_selector(selector)
        return out

    def _translate_selector(self, selector: dict[str, Any]) -> None:
        labels = selector.get("matchLabels")
        if isinstance(labels, dict) and isinstance(labels.get(NAMESPACE_NAME_LABEL), str):
            labels[NAMESPACE_NAME_LABEL] = self.real(labels[NAMESPACE_NAME_LABEL])
        for expr in selector.get("matchExpressions") or []:
            if isinstance(expr, dict) and expr.get("key") == NAMESPACE_NAME_LABEL and isinstance(expr.get("values"), list):
                expr["values"] = [self.real(v) if isinstance(v, str) else v for v in expr["values"]]


def scope_label_use(manifest: Mapping[str, Any]) -> str | None:
    """Where a policy manifest selects on :data:`SCOPE_LABEL` (a label selector's
    ``matchLabels`` or ``matchExpressions``, or a Calico selector), None if nowhere.
    Such a selector would see the run's mark, which the scenario does not declare."""

    def visit(value: object, path: str) -> str | None:
        if isinstance(value, Mapping):
            labels = value.get("matchLabels")
            if isinstance(labels, Mapping) and SCOPE_LABEL in labels:
                return f"{path}.matchLabels"
            for i, expr in enumerate(value.get("matchExpressions") or []):
                if isinstance(expr, Mapping) and expr.get("key") == SCOPE_LABEL:
                    return f"{path}.matchExpressions[{i}]"
            for key, sub in value.items():
                if key in ("selector", "namespaceSelector") and isinstance(sub, str) and _calico_selects(sub):
                    return f"{path}.{key}"
                found = visit(sub, f"{path}.{key}" if path else str(key))
                if found:
                    return found
        elif isinstance(value, list):
            for i, item in enumerate(value):
                found = visit(item, f"{path}[{i}]")
                if found:
                    return found
        return None

    return visit(manifest.get("spec"), "spec")


def _calico_selects(text: str) -> bool:
    try:
        selector = parse_calico_selector(text)
    except CalicoSelectorError:
        return False  # refused when the policy was read
    return any(getattr(node, "key", None) == SCOPE_LABEL for node in walk(selector.root))


def _without_nulls(value: Any) -> Any:
    """What the API server stores of a manifest with explicit nulls: the fields left out."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _is_staged_delete(spec: Mapping[str, Any]) -> bool:
    """A staged Delete, whose spec Calico requires empty but for the tier."""
    return spec.get("stagedAction") == "Delete"
