"""The API resources the harness applies besides NetworkPolicies, by apiVersion and kind.

- The network-policy-api's cluster-scoped kinds: ClusterNetworkPolicy
  (``policy.networking.k8s.io/v1alpha2``), AdminNetworkPolicy and
  BaselineAdminNetworkPolicy (``v1alpha1``), served by their CRDs
  (``<plural>.policy.networking.k8s.io``), which Calico's manifests and the Tigera
  operator install (clusters/calico/<minor>/recipe.yaml, ``admin_policies``).
- Calico's ``projectcalico.org/v3`` kinds: the enforced NetworkPolicy and
  GlobalNetworkPolicy and the three staged kinds. They are served by the Calico API
  server (an aggregated API server, the APIService ``v3.projectcalico.org``) on a
  cluster whose Calico resources are v1 CRDs, and by native ``<plural>.projectcalico.org``
  CRDs in Calico's v3 CRD mode (tigera/operator ``pkg/controller/apiserver/apiserver_controller.go``:
  ``RequiresAggregationServer: !UseV3CRDs``). Both serve the same group and version, so
  the same calls reach either; whether a kind is there is asked of API discovery.
- FelixConfiguration, for ``--deny-action`` (harness/kube/calico.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import HarnessError

CALICO_GROUP = "projectcalico.org"
CALICO_VERSION = "v3"
POLICY_GROUP = "policy.networking.k8s.io"


@dataclass(frozen=True)
class ApiResource:
    """One kind of object as the API serves it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd(self) -> str:
        """The name of the CustomResourceDefinition that serves it (when a CRD does)."""
        return f"{self.plural}.{self.group}"

    @property
    def kubectl(self) -> str:
        """How kubectl names it without ambiguity (``networkpolicies`` alone is Kubernetes')."""
        return self.crd

    def describe(self, namespace: str | None, name: str) -> str:
        return f"{self.kind} {namespace}/{name}" if namespace else f"{self.kind} {name}"


CLUSTER_NETWORK_POLICY = ApiResource(POLICY_GROUP, "v1alpha2", "clusternetworkpolicies", "ClusterNetworkPolicy", False)
ADMIN_NETWORK_POLICY = ApiResource(POLICY_GROUP, "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", False)
BASELINE_ADMIN_NETWORK_POLICY = ApiResource(
    POLICY_GROUP, "v1alpha1", "baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", False
)
CALICO_NETWORK_POLICY = ApiResource(CALICO_GROUP, CALICO_VERSION, "networkpolicies", "NetworkPolicy", True)
CALICO_GLOBAL_NETWORK_POLICY = ApiResource(CALICO_GROUP, CALICO_VERSION, "globalnetworkpolicies", "GlobalNetworkPolicy", False)
STAGED_NETWORK_POLICY = ApiResource(CALICO_GROUP, CALICO_VERSION, "stagednetworkpolicies", "StagedNetworkPolicy", True)
STAGED_GLOBAL_NETWORK_POLICY = ApiResource(
    CALICO_GROUP, CALICO_VERSION, "stagedglobalnetworkpolicies", "StagedGlobalNetworkPolicy", False
)
STAGED_KUBERNETES_NETWORK_POLICY = ApiResource(
    CALICO_GROUP, CALICO_VERSION, "stagedkubernetesnetworkpolicies", "StagedKubernetesNetworkPolicy", True
)
FELIX_CONFIGURATION = ApiResource(CALICO_GROUP, CALICO_VERSION, "felixconfigurations", "FelixConfiguration", False)

#: Every kind a scenario can declare besides a Kubernetes NetworkPolicy, in the order
#: leftovers are swept.
POLICY_RESOURCES = (
    CLUSTER_NETWORK_POLICY,
    ADMIN_NETWORK_POLICY,
    BASELINE_ADMIN_NETWORK_POLICY,
    CALICO_NETWORK_POLICY,
    CALICO_GLOBAL_NETWORK_POLICY,
    STAGED_NETWORK_POLICY,
    STAGED_GLOBAL_NETWORK_POLICY,
    STAGED_KUBERNETES_NETWORK_POLICY,
)
_BY_TYPE = {(r.api_version, r.kind): r for r in POLICY_RESOURCES}


def resource_of(api_version: object, kind: object) -> ApiResource:
    """The resource of a manifest's ``apiVersion`` and ``kind``."""
    found = _BY_TYPE.get((str(api_version), str(kind)))
    if found is None:
        known = ", ".join(f"{r.api_version} {r.kind}" for r in POLICY_RESOURCES)
        raise HarnessError(f"no API resource is known for {api_version} {kind} (known: {known})")
    return found
