"""A thin wrapper around the official ``kubernetes`` client: the calls the
cluster backends make, with the client's exceptions turned into the harness's.

Imported only when a cluster backend is created (the client is slow to import).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream

from harness.errors import BackendError, BackendUnavailable

log = logging.getLogger("harness.kube")

#: Field manager of every server-side apply the harness makes.
FIELD_MANAGER = "netpol-harness"
#: Seconds one API request may take.
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class ExecResult:
    """``exit_code`` None: the command did not finish in time or the exec failed."""

    exit_code: int | None
    stdout: str
    stderr: str
    error: str = ""


def _reason(err: ApiException) -> str:
    import json

    try:
        body = json.loads(err.body or "{}")
        return str(body.get("message") or err.reason)
    except (ValueError, TypeError):
        return str(err.reason or err)


class KubeClient:
    """One cluster, as seen through one kubeconfig and context."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.configuration = k8s.Configuration()
        try:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=self.configuration, persist_config=False
            )
        except (ConfigException, OSError, TypeError, ValueError) as err:
            where = kubeconfig or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
            path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            if os.pathsep not in path and not os.path.exists(os.path.expanduser(path)):
                reason = f"{path} does not exist"
            else:
                reason = str(err).rstrip(".")
            raise BackendUnavailable(
                f"cannot load {where}{f' (context {context})' if context else ''}: {reason}. "
                "Point --kubeconfig (or KUBECONFIG) at the kubeconfig of the cluster to test"
            ) from None
        self.context = context or self._current_context(kubeconfig)
        self.api = k8s.ApiClient(self.configuration)
        self.core = k8s.CoreV1Api(self.api)
        self.networking = k8s.NetworkingV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self._policy_resource: Any = None

    @staticmethod
    def _current_context(kubeconfig: str | None) -> str | None:
        try:
            _, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            return str(active["name"]) if active else None
        except (ConfigException, OSError, KeyError, TypeError):
            return None

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def close(self) -> None:
        self.api.close()

    def to_dict(self, obj: Any) -> dict[str, Any]:
        result = self.api.sanitize_for_serialization(obj)
        return result if isinstance(result, dict) else {}

    # -- cluster ----------------------------------------------------------------------

    def server_version(self, timeout: float = REQUEST_TIMEOUT) -> str:
        try:
            return str(k8s.VersionApi(self.api).get_code(_request_timeout=timeout).git_version)
        except ApiException as err:
            raise BackendUnavailable(f"the API server at {self.server} answered {err.status}: {_reason(err)}") from None
        except Exception as err:  # urllib3 raises many kinds: refused, TLS, timeout
            raise BackendUnavailable(
                f"cannot reach the API server at {self.server}: {type(err).__name__}: {err}. "
                "Check that the cluster runs and that the kubeconfig and context are the right ones"
            ) from None

    def nodes(self) -> list[dict[str, Any]]:
        return [self.to_dict(n) for n in self._call("list nodes", self.core.list_node).items]

    def node_readiness(self) -> tuple[int, int]:
        nodes = self.nodes()

        def is_ready(node: dict[str, Any]) -> bool:
            conditions = (node.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        return sum(1 for n in nodes if is_ready(n)), len(nodes)

    def tigera_statuses(self) -> dict[str, bool]:
        try:
            listing = self.custom.list_cluster_custom_object(
                "operator.tigera.io", "v1", "tigerastatuses", _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status == 404:  # the CRD is not there yet
                return {}
            raise BackendError(f"cannot list tigerastatuses: {_reason(err)}") from None
        statuses = {}
        for item in listing.get("items", []):
            conditions = (item.get("status") or {}).get("conditions") or []
            statuses[str(item["metadata"]["name"])] = any(
                c.get("type") == "Available" and c.get("status") == "True" for c in conditions
            )
        return statuses

    def daemonset_images(self, names: tuple[str, ...], namespaces: tuple[str, ...]) -> dict[str, str]:
        """Image of the first container of each DaemonSet found, by name."""
        found: dict[str, str] = {}
        for namespace in namespaces:
            for name in names:
                try:
                    ds = self.apps.read_namespaced_daemon_set(name, namespace, _request_timeout=REQUEST_TIMEOUT)
                except ApiException:
                    continue
                found.setdefault(name, str(ds.spec.template.spec.containers[0].image))
        return found

    # -- namespaces -------------------------------------------------------------------

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        try:
            return self.to_dict(self.core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT))
        except ApiException as err:
            if err.status == 404:
                return None
            raise BackendError(f"cannot read namespace {name}: {_reason(err)}") from None

    def create_namespace(self, manifest: Mapping[str, Any]) -> None:
        self._call(f"create namespace {manifest['metadata']['name']}", self.core.create_namespace, dict(manifest))

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise BackendError(f"cannot delete namespace {name}: {_reason(err)}") from None

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        patch = [{"op": "add", "path": "/metadata/labels", "value": dict(labels)}]
        self._call(f"relabel namespace {name}", self.core.patch_namespace, name, patch)

    # -- pods -------------------------------------------------------------------------

    def create_pod(self, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        what = f"create pod {meta['namespace']}/{meta['name']}"
        self._call(what, self.core.create_namespaced_pod, meta["namespace"], dict(manifest))

    def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        return [self.to_dict(p) for p in self._call(f"list pods in {namespace}", self.core.list_namespaced_pod, namespace).items]

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise BackendError(f"cannot delete pod {namespace}/{name}: {_reason(err)}") from None

    def set_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        # A JSON patch "add" replaces the whole map: labels not given are removed.
        patch = [{"op": "add", "path": "/metadata/labels", "value": dict(labels)}]
        self._call(f"relabel pod {namespace}/{name}", self.core.patch_namespaced_pod, name, namespace, patch)

    def exec(self, namespace: str, pod: str, container: str, command: list[str], timeout: float) -> ExecResult:
        """Run ``command`` in a container and wait at most ``timeout`` seconds. Each
        call has its own ApiClient: ``stream`` patches the client it is given, so
        concurrent execs must not share one."""
        api = k8s.ApiClient(self.configuration)
        try:
            resp = stream(
                k8s.CoreV1Api(api).connect_get_namespaced_pod_exec,
                pod,
                namespace,
                container=container,
                command=command,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
            )
        except ApiException as err:
            api.close()
            return ExecResult(None, "", "", f"exec failed: {err.reason or err}")
        try:
            resp.run_forever(timeout=timeout)
            finished = not resp.is_open()
            stdout = resp.read_stdout() or ""
            stderr = resp.read_stderr() or ""
            if not finished:
                return ExecResult(None, stdout, stderr, f"no exit after {timeout:.0f}s")
            try:
                code = resp.returncode
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
                return ExecResult(None, stdout, stderr, f"exec ended without an exit code ({err!r})")
            return ExecResult(code, stdout, stderr)
        finally:
            resp.close()
            api.close()

    # -- policies ---------------------------------------------------------------------

    def _policies(self) -> Any:
        if self._policy_resource is None:
            from kubernetes.dynamic import DynamicClient

            dynamic = self._guard("discover the API", lambda: DynamicClient(self.api))
            self._policy_resource = dynamic.resources.get(api_version="networking.k8s.io/v1", kind="NetworkPolicy")
        return self._policy_resource

    def apply_policy(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply, owned by the harness's field manager."""
        meta = manifest["metadata"]
        resource = self._policies()
        self._call(
            f"apply NetworkPolicy {meta['namespace']}/{meta['name']}",
            resource.server_side_apply,
            body=dict(manifest),
            namespace=meta["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

    def delete_policy(self, namespace: str, name: str) -> bool:
        """False when there was no such policy."""
        try:
            self.networking.delete_namespaced_network_policy(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise BackendError(f"cannot delete NetworkPolicy {namespace}/{name}: {_reason(err)}") from None

    def delete_all_policies(self, namespace: str) -> None:
        what = f"delete the NetworkPolicies of {namespace}"
        self._call(what, self.networking.delete_collection_namespaced_network_policy, namespace)

    # -- helpers ----------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return self._guard(what, lambda: fn(*args, **kwargs))

    @staticmethod
    def _guard(what: str, action: Any) -> Any:
        try:
            return action()
        except ApiException as err:
            raise BackendError(f"cannot {what}: {err.status} {_reason(err)}") from None
        except BackendError:
            raise
        except Exception as err:  # connection errors from urllib3
            raise BackendError(f"cannot {what}: {type(err).__name__}: {err}") from None
