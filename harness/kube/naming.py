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
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Collection, Mapping
from typing import Any

from harness.core.errors import HarnessError
from harness.core.topology import NAMESPACE_NAME_LABEL

#: Prefix of every namespace the existing backend creates.
PREFIX = "nph"
_MAX_NAME = 63
_RUN_ID = re.compile(r"^[a-z0-9]{1,12}$")


class NamespaceMap:
    """Scenario namespace name ↔ namespace name on the cluster. With a run id every
    name gets its prefix; otherwise only the ``reserved`` names are mapped, to
    ``nph-<name>``."""

    def __init__(self, run_id: str | None = None, reserved: Collection[str] = ()) -> None:
        if run_id is not None and not _RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} must be 1-12 lowercase letters or digits")
        self.prefix = f"{PREFIX}-{run_id}-" if run_id else ""
        self.reserved = frozenset(reserved)
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
        """Labels to set on the real namespace: the API server owns the name label."""
        return {k: v for k, v in labels.items() if k != NAMESPACE_NAME_LABEL}

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
