"""What a cluster's CNI enforces of the kinds beyond Kubernetes NetworkPolicy, and
the refusal, with the reason, of a policy it would not enforce.

A policy the CNI ignores would leave the cluster as if the policy were not there,
and a scenario whose intent happens to match that would pass without testing. So
before anything of a step is applied, every cluster-scoped admin policy and every
Calico policy in the state is checked against :class:`PolicySupport`, and the first
that cannot be enforced raises :class:`~harness.core.errors.UnsupportedPolicy`
naming the CNI version, the field and why; the pipeline then reports the step's
cells unsupported with that reason.

- On ``kind`` the CNI is the Calico release the harness installed, and what it
  enforces is its recipe's (``admin_policies`` in clusters/calico/<minor>/recipe.yaml,
  with the Calico sources behind it).
- On ``existing`` it is what :func:`harness.backends.cluster.existing.detect_cni`
  finds: Calico of a minor version with a recipe is judged by that recipe; any other
  CNI (or a Calico minor without a recipe) enforces nothing the harness can vouch
  for, whatever CRDs the cluster has, since a CRD alone enforces nothing.
- In both, the CRD of each admin-policy kind must exist (a cluster upgraded from
  3.31 to 3.32 still has the v1alpha1 CRDs, but 3.32 no longer enforces them: the
  version decides first), and each Calico kind must be served by the
  ``projectcalico.org/v3`` API (the Calico API server, or Calico's v3 CRDs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.core.calico.policy import CalicoPolicy, StagedPolicy
from harness.core.cluster_policy import ClusterPolicy, PeerForm, unsupported_fields
from harness.core.errors import UnsupportedPolicy
from harness.kube.calico import AdminPolicySupport, CalicoRecipe
from harness.kube.resources import CALICO_GROUP, CALICO_VERSION, ApiResource

#: Calico releases whose API server cannot create a tiered policy (NetworkPolicy,
#: GlobalNetworkPolicy and their staged kinds) with server-side apply: it reads the
#: existing object first and answers NotFound (projectcalico/calico#12841, in
#: apiserver/pkg/registry/projectcalico/*/storage.go, Update). v3.32.1 fixes it
#: (#12906, on release-v3.32; v3.31.7 has no such read, and release-v3.33 has the
#: fix, #12905), so the patch releases after it, v3.32.4 included, have it too.
SSA_CANNOT_CREATE_TIERED = frozenset({"v3.32.0"})


@dataclass(frozen=True)
class PolicySupport:
    """What one cluster's CNI enforces. ``cni`` names it in messages (``Calico
    v3.32.4``); ``admin`` is None when no cluster-scoped admin policy is enforced,
    and ``why_not`` then says why; ``calico`` tells whether Calico's own kinds mean
    anything there."""

    cni: str
    admin: AdminPolicySupport | None = None
    calico: bool = False
    why_not: str = ""
    #: How the decision was reached, said once when the backend starts.
    basis: str = ""
    #: Server-side apply creates tiered Calico policies (False on v3.32.0).
    apply_creates_tiered: bool = True
    #: Why named ports of admin policies are not enforced; None: they are.
    named_ports_reason: str | None = None
    #: Where the facts come from (the recipe, which cites Calico's sources).
    record: str = ""

    @property
    def peer_forms(self) -> frozenset[PeerForm]:
        return frozenset(PeerForm(p) for p in self.admin.peers) if self.admin is not None else frozenset()


def calico_support(version: str, recipe: CalicoRecipe, basis: str = "") -> PolicySupport:
    """What Calico ``version`` enforces, from its minor version's recipe."""
    admin = recipe.admin_policies
    named = None
    if not admin.named_ports:
        named = (
            f"Calico {version} does not convert named ports of {', '.join(admin.kinds)}: it reads the entry as no port "
            "at all, so the rule would match every port (projectcalico/calico libcalico-go/lib/backend/k8s/conversion/"
            "conversion.go, k8sAdminPolicyPortToCalicoFields); use port numbers"
        )
    record = f"clusters/calico/{recipe.minor}/recipe.yaml"
    enforces = f"{', '.join(admin.kinds)} ({admin.api_version})"
    return PolicySupport(
        cni=f"Calico {version}",
        admin=admin,
        calico=True,
        basis=f"{basis or f'Calico {version}'}: enforces {enforces} and Calico's projectcalico.org/v3 kinds, as {record} records",
        apply_creates_tiered=version not in SSA_CANNOT_CREATE_TIERED,
        named_ports_reason=named,
        record=record,
    )


def minor_of(version: str) -> str | None:
    """``v3.32.4`` → ``3.32``."""
    match = re.match(r"v?(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def unknown_support(cni: str, why_not: str, basis: str = "", calico: bool = False) -> PolicySupport:
    return PolicySupport(cni=cni, why_not=why_not, calico=calico, basis=basis or why_not)


class SupportCheck:
    """Checks the kinds of a state against one :class:`PolicySupport`, asking the
    cluster whether each CRD exists and which Calico kinds are served (once each
    until :meth:`forget`, e.g. after a Calico upgrade)."""

    def __init__(
        self,
        backend: str,
        support: PolicySupport,
        crd_exists: Callable[[str], bool],
        served: Callable[[str, str], frozenset[str] | None],
    ) -> None:
        self.backend = backend
        self.support = support
        self._crd_exists = crd_exists
        self._served = served
        self._crds: dict[str, bool] = {}
        self._calico: frozenset[str] | None = None
        self._asked_calico = False

    def forget(self, support: PolicySupport | None = None) -> None:
        """Ask the cluster again (its CNI changed); with ``support``, judge by that."""
        if support is not None:
            self.support = support
        self._crds.clear()
        self._asked_calico = False

    def _refuse(self, policy: str, source: str, path: str, reason: str) -> UnsupportedPolicy:
        return UnsupportedPolicy(self.backend, source or "<inline>", policy, path, reason)

    def cluster_policy(self, policy: ClusterPolicy, resource: ApiResource) -> None:
        support = self.support
        admin = support.admin
        if admin is None:
            raise self._refuse(
                policy.ref, policy.source, "kind", f"{support.cni} enforces no {policy.kind.value}: {support.why_not}"
            )
        if policy.kind.value not in admin.kinds:
            raise self._refuse(
                policy.ref,
                policy.source,
                "kind",
                f"{support.cni} does not enforce {policy.kind.value} ({policy.api_version}): it enforces "
                f"{', '.join(admin.kinds)} ({admin.api_version}), as {support.record} records from Calico's sources",
            )
        if not self._crd(resource.crd):
            raise self._refuse(
                policy.ref,
                policy.source,
                "kind",
                f"the CustomResourceDefinition {resource.crd} is not installed on the cluster; {support.cni} "
                f"installs it with {admin.crds_in}",
            )
        problems = unsupported_fields(policy, self.backend, support.peer_forms, support.named_ports_reason)
        for problem in problems:
            field_name = problem.path.rsplit(".", 1)[1]
            reason = problem.reason
            if field_name not in ("namedPort", "destinationNamedPort"):
                reason = (
                    f"{support.cni} does not enforce {field_name} peers: its converter handles "
                    f"{', '.join(admin.peers)} only and fails such a rule closed (as {support.record} records)"
                )
            raise self._refuse(policy.ref, policy.source, problem.path, reason)

    def calico_policy(self, ref: str, policy: CalicoPolicy | StagedPolicy, resource: ApiResource) -> None:
        support = self.support
        if not support.calico:
            raise self._refuse(
                ref,
                policy.source,
                "kind",
                f"the cluster's CNI is {support.cni}, not Calico: a {resource.api_version} {resource.kind} means "
                f"nothing to it ({support.why_not or support.basis})",
            )
        served = self._calico_resources()
        if served is None or resource.plural not in served:
            said = "is not served at all" if served is None else f"serves {', '.join(sorted(served)) or 'nothing'}"
            raise self._refuse(
                ref,
                policy.source,
                "kind",
                f"the cluster does not serve {resource.kubectl} ({CALICO_GROUP}/{CALICO_VERSION} {said}): {resource.kind} "
                "needs the Calico API server (the operator's APIServer resource, which Calico's custom-resources.yaml "
                "creates) or Calico's v3 CRDs, and Calico 3.30 or later for the staged kinds",
            )

    def _crd(self, name: str) -> bool:
        if name not in self._crds:
            self._crds[name] = self._crd_exists(name)
        return self._crds[name]

    def _calico_resources(self) -> frozenset[str] | None:
        if not self._asked_calico:
            self._calico = self._served(CALICO_GROUP, CALICO_VERSION)
            self._asked_calico = True
        return self._calico
