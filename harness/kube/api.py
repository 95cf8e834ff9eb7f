"""The typed boundary between the cluster backends and a Kubernetes API server.

:class:`KubeApi` is every call the backends make. :class:`harness.kube.client.KubeClient`
implements it with the official client; the tests' in-memory double implements the
same Protocol. Calls return the typed views of :mod:`harness.kube.views` and fail
with :class:`harness.kube.errors.KubeApiError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.kube.resources import ApiResource
from harness.kube.views import (
    EndpointSliceView,
    FelixConfigurationView,
    InstallationView,
    NamespaceView,
    NodeView,
    ObjectMeta,
    PodView,
    ServiceView,
    TigeraStatusView,
)


@dataclass(frozen=True)
class ExecRequest:
    """One command to run in a container, bounded by ``timeout`` seconds."""

    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class ExecResult:
    """``exit_code`` None: the command did not finish in time or the exec failed
    (``error`` says why)."""

    exit_code: int | None
    stdout: str
    stderr: str
    error: str = ""


class KubeApi(Protocol):
    """One cluster, as one kubeconfig and context see it."""

    @property
    def kubeconfig(self) -> str | None: ...

    @property
    def context(self) -> str | None: ...

    @property
    def server(self) -> str: ...

    def close(self) -> None: ...

    def server_version(self, timeout: float = ...) -> str: ...

    def nodes(self) -> list[NodeView]: ...

    def tigera_statuses(self) -> list[TigeraStatusView]:
        """Every TigeraStatus; empty while the CRD does not exist yet."""
        ...

    def installation(self, name: str = "default") -> InstallationView | None:
        """The operator's Installation, None when there is none (or no CRD yet)."""
        ...

    def crd_exists(self, name: str) -> bool: ...

    def daemonset_images(self, names: tuple[str, ...], namespaces: tuple[str, ...]) -> dict[str, str]: ...

    def read_namespace(self, name: str) -> NamespaceView | None: ...

    def list_namespaces(self) -> list[NamespaceView]: ...

    def create_namespace(self, manifest: Mapping[str, Any]) -> None: ...

    def delete_namespace(self, name: str) -> None: ...

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None: ...

    def create_pod(self, manifest: Mapping[str, Any]) -> None: ...

    def list_pods(self, namespace: str) -> list[PodView]: ...

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def set_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str]) -> None: ...

    def exec(self, request: ExecRequest) -> ExecResult: ...

    def exec_many(self, requests: Sequence[ExecRequest], workers: int) -> list[ExecResult]:
        """The results of ``requests``, in order, at most ``workers`` at a time. On
        Ctrl-C the open exec streams are closed and KeyboardInterrupt is raised."""
        ...

    def apply_policy(self, manifest: Mapping[str, Any]) -> None: ...

    def delete_policy(self, namespace: str, name: str) -> bool: ...

    def delete_all_policies(self, namespace: str) -> None: ...

    def create_service(self, manifest: Mapping[str, Any]) -> ServiceView: ...

    def read_service(self, namespace: str, name: str) -> ServiceView | None: ...

    def delete_service(self, namespace: str, name: str) -> None: ...

    def list_endpoint_slices(self, namespace: str, service: str) -> list[EndpointSliceView]: ...

    # Custom objects: the cluster-scoped admin policies and Calico's projectcalico.org/v3 kinds.

    def served_resources(self, group: str, version: str) -> frozenset[str] | None:
        """The resources API discovery lists for ``group/version``; None when not served."""
        ...

    def read_object(self, resource: ApiResource, namespace: str | None, name: str) -> ObjectMeta | None: ...

    def apply_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        """Server-side apply with the harness's field manager and strict field validation."""
        ...

    def create_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None: ...

    def delete_object(self, resource: ApiResource, namespace: str | None, name: str) -> bool:
        """False when there was no such object."""
        ...

    def list_objects(self, resource: ApiResource, label_selector: str) -> list[ObjectMeta]:
        """Objects in every namespace matching ``label_selector``; none when the resource is not served."""
        ...

    def felix_configuration(self, name: str = "default") -> FelixConfigurationView | None: ...
