"""A thin wrapper around the official ``kubernetes`` client: the calls the
cluster backends make, each through one guard that turns whatever the client
raises (an API answer, a refused or reset connection, a broken exec stream, a
reply that is not the API's JSON) into a :class:`~harness.core.errors.BackendError`
saying what failed and against which API server.

Imported only when a cluster backend is created (the client is slow to import).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream
from websocket import (
    WebSocketBadStatusException,
    WebSocketConnectionClosedException,
    WebSocketException,
    WebSocketTimeoutException,
)

from harness.core.errors import BackendError, BackendUnavailable

log = logging.getLogger("harness.kube")

T = TypeVar("T")

#: Field manager of every server-side apply the harness makes.
FIELD_MANAGER = "netpol-harness"
#: Seconds one API request may take.
REQUEST_TIMEOUT = 30.0
#: Content type of a server-side apply (a JSON body is valid YAML).
APPLY_PATCH = "application/apply-patch+yaml"

#: A request that got no answer: refused, reset, TLS, timed out (urllib3 and
#: sockets), or an exec stream that broke (websocket).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    WebSocketException,
)
#: An answer that is not the API's JSON (a proxy's HTML page, a truncated body): the
#: client fails while decoding it. AttributeError as well, because the client raises
#: one of its own when an exec cannot connect (it decodes an error body that is None).
REPLY_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, AttributeError)


@dataclass(frozen=True)
class ExecResult:
    """``exit_code`` None: the command did not finish in time or the exec failed."""

    exit_code: int | None
    stdout: str
    stderr: str
    error: str = ""


def _one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line of printable characters, shortened."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _message_of(body: object, fallback: object) -> str:
    """The ``message`` of the API's Status object in ``body``, else ``fallback``."""
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = json.loads(text or "{}").get("message") if isinstance(text, str) else None
    except (ValueError, TypeError, AttributeError):
        message = None
    return _one_line(message or fallback)


def _reason(err: ApiException) -> str:
    return _message_of(err.body, err.reason or err)


def _unwrap(err: BaseException) -> BaseException:
    """The error that says why. When an exec cannot connect, the client wraps the
    websocket's error in an ApiException with status 0, and then, handling that,
    raises an AttributeError of its own."""
    if isinstance(err, AttributeError) and isinstance(err.__context__, ApiException):
        err = err.__context__
    if isinstance(err, ApiException) and not err.status and err.__context__ is not None:
        err = err.__context__
    for _ in range(5):  # urllib3: retries exhausted → protocol or connection error → the socket's
        if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
            err = err.reason
        elif isinstance(err, urllib3.exceptions.ProtocolError) and len(err.args) > 1 and isinstance(err.args[1], BaseException):
            err = err.args[1]
        elif isinstance(err, urllib3.exceptions.NewConnectionError) and isinstance(err.__cause__, OSError):
            err = err.__cause__  # refused, unreachable: the socket's own words
        else:
            break
    return err


def describe_failure(err: BaseException, server: str) -> str:
    """Why a request to ``server`` failed, in one line."""
    err = _unwrap(err)
    said = f"{type(err).__name__}: {_one_line(err)}"
    if isinstance(err, ApiException) and err.status:
        return f"the API server at {server} answered {err.status}: {_reason(err)}"
    if isinstance(err, WebSocketBadStatusException):
        message = _message_of(err.resp_body, err.status_message)
        return f"the API server at {server} answered {err.status_code} instead of opening the exec stream: {message}"
    if isinstance(err, ApiException):
        return f"no answer from the API server at {server} ({_one_line(err.reason)})"
    if (isinstance(err, http.client.HTTPException) and not isinstance(err, ConnectionError)) or (
        isinstance(err, WebSocketException)
        and not isinstance(err, WebSocketConnectionClosedException | WebSocketTimeoutException)
    ):
        return f"the API server at {server} answered with something that is not HTTP ({said})"
    if isinstance(err, TRANSPORT_ERRORS):
        return f"no answer from the API server at {server} ({said})"
    return f"the API server at {server} sent a reply that is not a Kubernetes API response ({said})"


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
        self.discovery = k8s.DiscoveryV1Api(self.api)

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

    # -- the guard --------------------------------------------------------------------

    def _guard(self, what: str, action: Callable[[], T]) -> T:
        """Run one API call; every way it can fail becomes a BackendError naming
        ``what`` (``delete namespace shop``) and the API server."""
        try:
            return action()
        except BackendError:
            raise
        except (ApiException, *TRANSPORT_ERRORS, *REPLY_ERRORS) as err:
            raise BackendError(f"cannot {what}: {describe_failure(err, self.server)}") from None

    def _guard_absent(self, what: str, action: Callable[[], T], absent: Collection[int] = (404,)) -> T | None:
        """:meth:`_guard`, with None when the API server answers one of ``absent``."""

        def attempt() -> T | None:
            try:
                return action()
            except ApiException as err:
                if err.status in absent:
                    return None
                raise

        return self._guard(what, attempt)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return self._guard(what, lambda: fn(*args, **kwargs))

    def _call_absent(
        self, what: str, fn: Callable[..., T], *args: Any, absent: Collection[int] = (404,), **kwargs: Any
    ) -> T | None:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        return self._guard_absent(what, lambda: fn(*args, **kwargs), absent)

    def _not_api_reply(self, what: str, expected: str) -> BackendError:
        return BackendError(f"cannot {what}: the API server at {self.server} sent a reply that is not {expected}")

    # -- cluster ----------------------------------------------------------------------

    def server_version(self, timeout: float = REQUEST_TIMEOUT) -> str:
        try:
            info = self._call("ask for the Kubernetes version", k8s.VersionApi(self.api).get_code, _request_timeout=timeout)
            return str(info.git_version)
        except BackendError as err:
            raise BackendUnavailable(
                f"{err}. Check that the cluster runs and that the kubeconfig and context are the right ones"
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
        """TigeraStatus name → Available; empty while the CRD does not exist yet."""
        what = "list tigerastatuses"
        listing = self._call_absent(what, self.custom.list_cluster_custom_object, "operator.tigera.io", "v1", "tigerastatuses")
        if listing is None:
            return {}
        if not isinstance(listing, dict) or not isinstance(listing.get("items", []), list):
            raise self._not_api_reply(what, "a list of TigeraStatus objects")
        statuses = {}
        for item in listing.get("items", []):
            name = ((item or {}).get("metadata") or {}).get("name")
            if not name:
                continue
            conditions = ((item or {}).get("status") or {}).get("conditions") or []
            statuses[str(name)] = any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
        return statuses

    def daemonset_images(self, names: tuple[str, ...], namespaces: tuple[str, ...]) -> dict[str, str]:
        """Image of the first container of each DaemonSet found, by name. A DaemonSet
        that is not there, or that this user may not read, is skipped."""
        found: dict[str, str] = {}
        for namespace in namespaces:
            for name in names:
                read = self._call_absent(
                    f"read DaemonSet {namespace}/{name}",
                    self.apps.read_namespaced_daemon_set,
                    name,
                    namespace,
                    absent=(403, 404),
                )
                template = ((self.to_dict(read) if read is not None else {}).get("spec") or {}).get("template") or {}
                containers = (template.get("spec") or {}).get("containers") or []
                if containers and containers[0].get("image"):
                    found.setdefault(name, str(containers[0]["image"]))
        return found

    # -- namespaces -------------------------------------------------------------------

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        what = f"read namespace {name}"
        found = self._call_absent(what, self.core.read_namespace, name)
        if found is None:
            return None
        namespace = self.to_dict(found)
        if (namespace.get("metadata") or {}).get("name") != name:
            raise self._not_api_reply(what, f"the Namespace {name}")
        return namespace

    def list_namespaces(self) -> list[dict[str, Any]]:
        return [self.to_dict(n) for n in self._call("list namespaces", self.core.list_namespace).items]

    def create_namespace(self, manifest: Mapping[str, Any]) -> None:
        self._call(f"create namespace {manifest['metadata']['name']}", self.core.create_namespace, dict(manifest))

    def delete_namespace(self, name: str) -> None:
        """Start deleting a namespace; one that is not there is no error."""
        self._call_absent(f"delete namespace {name}", self.core.delete_namespace, name)

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
        """Delete a pod at once; one that is not there is no error."""
        what = f"delete pod {namespace}/{name}"
        self._call_absent(what, self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=0)

    def set_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        # A JSON patch "add" replaces the whole map: labels not given are removed.
        patch = [{"op": "add", "path": "/metadata/labels", "value": dict(labels)}]
        self._call(f"relabel pod {namespace}/{name}", self.core.patch_namespaced_pod, name, namespace, patch)

    def exec(self, namespace: str, pod: str, container: str, command: list[str], timeout: float) -> ExecResult:
        """Run ``command`` in a container and wait at most ``timeout`` seconds. A
        failed exec is a result with ``error`` set (the guard's message), so that a
        probe round reports it per cell. Each call has its own ApiClient: ``stream``
        patches the client it is given, so concurrent execs must not share one."""
        what = f"run a command in pod {namespace}/{pod}"
        api = k8s.ApiClient(self.configuration)
        resp: Any = None
        try:
            resp = self._guard(
                what,
                lambda: stream(
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
                ),
            )
            return self._guard(what, lambda: _collect(resp, timeout))
        except BackendError as err:
            return ExecResult(None, "", "", str(err))
        finally:
            if resp is not None:
                with suppress(*TRANSPORT_ERRORS):
                    resp.close()
            api.close()

    # -- policies ---------------------------------------------------------------------

    def apply_policy(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply, owned by the harness's field manager."""
        meta = manifest["metadata"]
        what = f"apply NetworkPolicy {meta['namespace']}/{meta['name']}"
        applied = self._call(
            what,
            self.networking.patch_namespaced_network_policy,
            meta["name"],
            meta["namespace"],
            dict(manifest),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        )
        if (self.to_dict(applied).get("metadata") or {}).get("name") != meta["name"]:
            raise self._not_api_reply(what, "the NetworkPolicy applied")

    def delete_policy(self, namespace: str, name: str) -> bool:
        """False when there was no such policy."""
        what = f"delete NetworkPolicy {namespace}/{name}"
        return self._call_absent(what, self.networking.delete_namespaced_network_policy, name, namespace) is not None

    def delete_all_policies(self, namespace: str) -> None:
        what = f"delete the NetworkPolicies of {namespace}"
        self._call(what, self.networking.delete_collection_namespaced_network_policy, namespace)

    # -- Services -----------------------------------------------------------------------

    def create_service(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Service; the object the API server returns (with its cluster IP)."""
        meta = manifest["metadata"]
        what = f"create Service {meta['namespace']}/{meta['name']}"
        return self.to_dict(self._call(what, self.core.create_namespaced_service, meta["namespace"], dict(manifest)))

    def read_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._call_absent(f"read Service {namespace}/{name}", self.core.read_namespaced_service, name, namespace)
        return self.to_dict(found) if found is not None else None

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete a Service; one that is not there is no error."""
        self._call_absent(f"delete Service {namespace}/{name}", self.core.delete_namespaced_service, name, namespace)

    def list_endpoint_slices(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The EndpointSlices of a Service: those labelled ``kubernetes.io/service-name``
        with its name (discovery.k8s.io/v1)."""
        what = f"list the EndpointSlices of Service {namespace}/{service}"
        listing = self._call(
            what, self.discovery.list_namespaced_endpoint_slice, namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
        return [self.to_dict(item) for item in listing.items]


def _collect(resp: Any, timeout: float) -> ExecResult:
    """Wait for an exec stream to end and read what it left."""
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
