"""The calls the cluster backends make, through the official ``kubernetes`` client.

Every call asks for the raw reply (``_preload_content=False``) and this module reads
it: the JSON is decoded here and turned into the typed views of
:mod:`harness.kube.views`. Whatever fails on the way becomes one
:class:`~harness.kube.errors.KubeApiError` naming the call and the API server, with
the HTTP status kept: an API error (403, 404...), no answer at all (refused, reset,
timed out), bytes that are not HTTP, a reply that is not JSON, or JSON that is not
the object asked for. Only the client's own exceptions are translated; an exception
raised by the harness itself (a KeyError, a TypeError) stays what it is, a bug.

Exec uses the client's websocket streams, with two corrections:

- ``kubernetes.stream.ws_client.create_websocket`` opens the websocket with no
  timeout (kubernetes-client/python, stream/ws_client.py), so an API server that
  accepts the connection and never answers the upgrade would hold an exec forever.
  :class:`_BoundedWebSocket` gives that connect a time limit.
- ``websocket_call`` turns anything raised while connecting, KeyboardInterrupt
  included, into an ``ApiException`` with status 0 (same file), and the generated
  client then fails with an AttributeError of its own. Ctrl-C is taken back out and
  raised as KeyboardInterrupt.

Imported only when a cluster backend is created (the client is slow to import).
"""

from __future__ import annotations

import contextvars
import functools
import http.client
import json
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import suppress
from typing import Any

import urllib3.exceptions
import websocket
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream, ws_client
from websocket import (
    WebSocketBadStatusException,
    WebSocketConnectionClosedException,
    WebSocketException,
    WebSocketTimeoutException,
)

from harness.core.errors import BackendUnavailable
from harness.kube.api import ExecRequest, ExecResult
from harness.kube.errors import TRANSIENT_STATUSES, KubeApiError
from harness.kube.execs import run_concurrently
from harness.kube.resources import FELIX_CONFIGURATION, ApiResource
from harness.kube.views import (
    DaemonSetView,
    EndpointSliceView,
    FelixConfigurationView,
    InstallationView,
    NamespaceView,
    NodeView,
    ObjectMeta,
    PodView,
    ReplyShapeError,
    ServiceView,
    TigeraStatusView,
    daemonset_view,
    endpoint_slice_view,
    felix_configuration_view,
    installation_view,
    items_of,
    name_of,
    namespace_view,
    node_view,
    object_meta_view,
    pod_view,
    served_resources_of,
    server_version_of,
    service_view,
    tigera_status_view,
)

log = logging.getLogger("harness.kube")

#: Field manager of every server-side apply the harness makes.
FIELD_MANAGER = "netpol-harness"
#: Seconds one API request may take.
REQUEST_TIMEOUT = 30.0
#: Seconds to open an exec stream (TCP connect, TLS and the websocket upgrade).
EXEC_CONNECT_TIMEOUT = 30.0
#: Content type of a server-side apply (a JSON body is valid YAML).
APPLY_PATCH = "application/apply-patch+yaml"
#: Field validation of the custom objects the harness applies: a field the CRD (or
#: Calico's API server) does not know is an error, as under kubectl's default
#: ``--validate=strict``, instead of being dropped with a warning, which would apply
#: another policy than the scenario's.
STRICT = "Strict"
#: The exec stream's status channel (the Status object of the finished command).
_ERROR_CHANNEL = 3

#: A request that got no answer: refused, reset, TLS, timed out (urllib3 and
#: sockets), or an exec stream that broke (websocket).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    WebSocketException,
)

_connect_timeout: contextvars.ContextVar[float] = contextvars.ContextVar("exec_connect_timeout", default=EXEC_CONNECT_TIMEOUT)


class _BoundedWebSocket(websocket.WebSocket):
    """The websocket the client's exec streams use, with a time limit on connecting
    (and on every later blocking socket call) unless the caller gives one."""

    def connect(self, url: str, **options: Any) -> None:
        options.setdefault("timeout", _connect_timeout.get())
        super().connect(url, **options)  # type: ignore[no-untyped-call]


ws_client.WebSocket = _BoundedWebSocket


def _one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line of printable characters, shortened."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _message_of(body: object, fallback: object) -> str:
    """The ``message`` of the API's Status object in ``body``, else ``fallback``."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message: object = None
    if isinstance(text, str) and text.strip():
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            message = decoded.get("message")
    return _one_line(message if isinstance(message, str) and message else fallback)


def _retry_after(headers: object) -> float | None:
    if not isinstance(headers, Mapping):
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _unwrap(err: BaseException) -> BaseException:
    """The error that says why: the websocket's or socket's own, under the
    ApiException with status 0 and the urllib3 retry wrappers."""
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


def translate(what: str, err: BaseException, server: str) -> KubeApiError:
    """The KubeApiError for an exception the client (or the network) raised."""
    err = _unwrap(err)
    said = f"{type(err).__name__}: {_one_line(err)}"
    if isinstance(err, ApiException) and err.status:
        status = int(err.status)
        return KubeApiError(
            what,
            f"the API server at {server} answered {status}: {_message_of(err.body, err.reason or err)}",
            status=status,
            reason=str(err.reason or ""),
            transient=status in TRANSIENT_STATUSES,
            retry_after=_retry_after(err.headers),
        )
    if isinstance(err, WebSocketBadStatusException):
        status = int(err.status_code)
        return KubeApiError(
            what,
            f"the API server at {server} answered {status} instead of opening the exec stream: "
            f"{_message_of(err.resp_body, err.status_message)}",
            status=status,
            reason=str(err.status_message or ""),
            transient=status in TRANSIENT_STATUSES,
        )
    if isinstance(err, ApiException):
        # Status 0: the client's own words for a failure without an answer (TLS, for one).
        reason = str(err.reason or "")
        return KubeApiError(
            what, f"no answer from the API server at {server} ({_one_line(reason)})", transient=not reason.startswith("SSLError")
        )
    if (isinstance(err, http.client.HTTPException) and not isinstance(err, ConnectionError)) or (
        isinstance(err, WebSocketException)
        and not isinstance(err, WebSocketConnectionClosedException | WebSocketTimeoutException)
    ):
        return KubeApiError(what, f"the API server at {server} answered with something that is not HTTP ({said})")
    return KubeApiError(what, f"no answer from the API server at {server} ({said})", transient=True)


def _raise_if_interrupted(err: BaseException) -> None:
    """Ctrl-C (or SystemExit) that the client wrapped while connecting an exec."""
    seen: BaseException | None = err
    for _ in range(4):
        if seen is None:
            return
        if isinstance(seen, KeyboardInterrupt | SystemExit):
            raise seen
        seen = seen.__context__


class KubeClient:
    """One cluster, as seen through one kubeconfig and context."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, *, exec_connect_timeout: float = EXEC_CONNECT_TIMEOUT
    ) -> None:
        self._kubeconfig = kubeconfig
        self.exec_connect_timeout = exec_connect_timeout
        self.configuration = k8s.Configuration()
        try:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=self.configuration, persist_config=False
            )
        except (ConfigException, OSError, TypeError, AttributeError, ValueError, yaml.YAMLError) as err:
            # The client reads the file with yaml.safe_load and indexes what it gets:
            # a file that is not YAML, or YAML that is not a mapping, fails in there.
            where = kubeconfig or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
            path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            if os.pathsep not in path and not os.path.exists(os.path.expanduser(path)):
                reason = f"{path} does not exist"
            elif isinstance(err, yaml.YAMLError):
                mark = getattr(err, "problem_mark", None)
                at = f" at line {mark.line + 1}" if mark is not None else ""
                reason = f"it is not valid YAML ({getattr(err, 'problem', None) or _one_line(err)}{at})"
            elif isinstance(err, TypeError | AttributeError):
                reason = "it is not a kubeconfig (expected a YAML mapping with clusters, users and contexts)"
            else:
                reason = str(err).rstrip(".")
            raise BackendUnavailable(
                f"cannot load {where}{f' (context {context})' if context else ''}: {reason}. "
                "Point --kubeconfig (or KUBECONFIG) at the kubeconfig of the cluster to test"
            ) from None
        self._context = context or self._current_context(kubeconfig)
        # No retries inside the client: urllib3 would repeat a timed-out request three
        # times, making every timeout four times what it says. The harness's waits
        # retry what is transient (harness.kube.waiting), within their own deadlines.
        self.configuration.retries = 0
        self.api = k8s.ApiClient(self.configuration)
        self.core = k8s.CoreV1Api(self.api)
        self.networking = k8s.NetworkingV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self.extensions = k8s.ApiextensionsV1Api(self.api)
        self._streams: set[Any] = set()
        self._streams_lock = threading.Lock()
        self.discovery = k8s.DiscoveryV1Api(self.api)

    @staticmethod
    def _current_context(kubeconfig: str | None) -> str | None:
        try:
            _, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
        except (ConfigException, OSError):
            return None
        name = active.get("name") if isinstance(active, dict) else None
        return str(name) if name else None

    @property
    def kubeconfig(self) -> str | None:
        return self._kubeconfig

    @property
    def context(self) -> str | None:
        return self._context

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def close(self) -> None:
        self.api.close()

    # -- the guard --------------------------------------------------------------------

    def _request(self, what: str, call: Callable[..., Any], *args: Any, absent: Collection[int] = (), **kwargs: Any) -> object:
        """One API call; its decoded JSON reply, or None when the API server answers
        one of ``absent``. Everything the client or the network can raise becomes a
        KubeApiError naming ``what`` and the API server."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        kwargs["_preload_content"] = False
        try:
            response = call(*args, **kwargs)
            try:
                body = response.data
            finally:
                response.release_conn()
        except ApiException as err:
            if err.status in absent:
                return None
            raise translate(what, err, self.server) from None
        except TRANSPORT_ERRORS as err:
            raise translate(what, err, self.server) from None
        if not isinstance(body, bytes | str) or not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError as err:
            raise KubeApiError(
                what,
                f"the API server at {self.server} sent a reply that is not a Kubernetes API response "
                f"(not JSON: {_one_line(err)})",
            ) from None

    def _view(self, what: str, expected: str, parse: Callable[[object], Any], raw: object) -> Any:
        """``parse(raw)``, or a KubeApiError saying the reply is not ``expected``."""
        try:
            return parse(raw)
        except ReplyShapeError as err:
            raise KubeApiError(what, f"the API server at {self.server} sent a reply that is not {expected} ({err})") from None

    def _list(self, what: str, expected: str, parse: Callable[[object, str], Any], raw: object) -> list[Any]:
        def each(listing: object) -> list[Any]:
            return [parse(item, f"items[{i}]") for i, item in enumerate(items_of(listing))]

        return list(self._view(what, expected, each, raw))

    def _check_name(self, what: str, expected: str, raw: object, name: str) -> None:
        found = self._view(what, expected, lambda obj: name_of(obj, "the reply"), raw)
        if found != name:
            raise KubeApiError(what, f"the API server at {self.server} sent a reply that is not {expected} (it names {found!r})")

    # -- cluster ----------------------------------------------------------------------

    def server_version(self, timeout: float = REQUEST_TIMEOUT) -> str:
        what = "ask for the Kubernetes version"
        try:
            raw = self._request(what, k8s.VersionApi(self.api).get_code, _request_timeout=timeout)
            return str(self._view(what, "a version", server_version_of, raw))
        except KubeApiError as err:
            raise BackendUnavailable(
                f"{err}. Check that the cluster runs and that the kubeconfig and context are the right ones"
            ) from None

    def nodes(self) -> list[NodeView]:
        what = "list nodes"
        return self._list(what, "a list of Node objects", node_view, self._request(what, self.core.list_node))

    def tigera_statuses(self) -> list[TigeraStatusView]:
        what = "list tigerastatuses"
        raw = self._request(
            what, self.custom.list_cluster_custom_object, "operator.tigera.io", "v1", "tigerastatuses", absent=(404,)
        )
        if raw is None:
            return []
        return self._list(what, "a list of TigeraStatus objects", tigera_status_view, raw)

    def installation(self, name: str = "default") -> InstallationView | None:
        what = f"read installations.operator.tigera.io/{name}"
        raw = self._request(
            what, self.custom.get_cluster_custom_object, "operator.tigera.io", "v1", "installations", name, absent=(404,)
        )
        if raw is None:
            return None
        view: InstallationView = self._view(what, f"the Installation {name}", installation_view, raw)
        return view

    def crd_exists(self, name: str) -> bool:
        what = f"read CustomResourceDefinition {name}"
        raw = self._request(what, self.extensions.read_custom_resource_definition, name, absent=(404,))
        if raw is None:
            return False
        self._check_name(what, f"the CustomResourceDefinition {name}", raw, name)
        return True

    def daemonset_images(self, names: tuple[str, ...], namespaces: tuple[str, ...]) -> dict[str, str]:
        """Image of the first container of each DaemonSet found, by name. A DaemonSet
        that is not there, or that this user may not read, is skipped."""
        found: dict[str, str] = {}
        for namespace in namespaces:
            for name in names:
                what = f"read DaemonSet {namespace}/{name}"
                raw = self._request(what, self.apps.read_namespaced_daemon_set, name, namespace, absent=(403, 404))
                if raw is None:
                    continue
                daemonset: DaemonSetView = self._view(what, f"the DaemonSet {namespace}/{name}", daemonset_view, raw)
                if daemonset.images and daemonset.images[0]:
                    found.setdefault(name, daemonset.images[0])
        return found

    # -- namespaces -------------------------------------------------------------------

    def read_namespace(self, name: str) -> NamespaceView | None:
        what = f"read namespace {name}"
        raw = self._request(what, self.core.read_namespace, name, absent=(404,))
        if raw is None:
            return None
        self._check_name(what, f"the Namespace {name}", raw, name)
        view: NamespaceView = self._view(what, f"the Namespace {name}", namespace_view, raw)
        return view

    def list_namespaces(self) -> list[NamespaceView]:
        what = "list namespaces"
        return self._list(what, "a list of Namespace objects", namespace_view, self._request(what, self.core.list_namespace))

    def create_namespace(self, manifest: Mapping[str, Any]) -> None:
        name = str(manifest["metadata"]["name"])
        what = f"create namespace {name}"
        self._check_name(what, f"the Namespace {name}", self._request(what, self.core.create_namespace, dict(manifest)), name)

    def delete_namespace(self, name: str) -> None:
        """Start deleting a namespace; one that is not there is no error."""
        self._request(f"delete namespace {name}", self.core.delete_namespace, name, absent=(404,))

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> None:
        # A JSON patch "add" replaces the whole map: labels not given are removed.
        patch = [{"op": "add", "path": "/metadata/labels", "value": dict(labels)}]
        what = f"relabel namespace {name}"
        self._check_name(what, f"the Namespace {name}", self._request(what, self.core.patch_namespace, name, patch), name)

    # -- pods -------------------------------------------------------------------------

    def create_pod(self, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        what = f"create pod {meta['namespace']}/{meta['name']}"
        raw = self._request(what, self.core.create_namespaced_pod, meta["namespace"], dict(manifest))
        self._check_name(what, f"the Pod {meta['namespace']}/{meta['name']}", raw, str(meta["name"]))

    def list_pods(self, namespace: str) -> list[PodView]:
        what = f"list pods in {namespace}"
        raw = self._request(what, self.core.list_namespaced_pod, namespace)
        return self._list(what, "a list of Pod objects", pod_view, raw)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod at once; one that is not there is no error."""
        what = f"delete pod {namespace}/{name}"
        self._request(what, self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=0, absent=(404,))

    def set_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        patch = [{"op": "add", "path": "/metadata/labels", "value": dict(labels)}]
        what = f"relabel pod {namespace}/{name}"
        raw = self._request(what, self.core.patch_namespaced_pod, name, namespace, patch)
        self._check_name(what, f"the Pod {namespace}/{name}", raw, name)

    # -- exec -------------------------------------------------------------------------

    def exec(self, request: ExecRequest) -> ExecResult:
        """Run a command in a container and wait at most ``request.timeout`` seconds.
        A failed exec is a result with ``error`` set, so that a probe round reports
        it per cell; Ctrl-C is raised. Each call has its own ApiClient: ``stream``
        patches the client it is given, so concurrent execs must not share one."""
        what = f"run a command in pod {request.namespace}/{request.pod}"
        api = k8s.ApiClient(self.configuration)
        token = _connect_timeout.set(self.exec_connect_timeout)
        resp: Any = None
        try:
            try:
                resp = stream(
                    k8s.CoreV1Api(api).connect_get_namespaced_pod_exec,
                    request.pod,
                    request.namespace,
                    container=request.container,
                    command=list(request.command),
                    stderr=True,
                    stdin=False,
                    stdout=True,
                    tty=False,
                    _preload_content=False,
                )
            except AttributeError as err:
                # The client's own failure while reporting the ApiException it made of the
                # connect error (see the module docstring); any other AttributeError is a bug.
                if not isinstance(err.__context__, ApiException):
                    raise
                _raise_if_interrupted(err.__context__)
                return ExecResult(None, "", "", str(translate(what, err.__context__, self.server)))
            except ApiException as err:
                _raise_if_interrupted(err)
                return ExecResult(None, "", "", str(translate(what, err, self.server)))
            except TRANSPORT_ERRORS as err:
                return ExecResult(None, "", "", str(translate(what, err, self.server)))
            with self._streams_lock:
                self._streams.add(resp)
            return self._collect(what, resp, request.timeout)
        finally:
            _connect_timeout.reset(token)
            if resp is not None:
                with self._streams_lock:
                    self._streams.discard(resp)
                with suppress(*TRANSPORT_ERRORS):
                    resp.close()
            api.close()

    def _collect(self, what: str, resp: Any, timeout: float) -> ExecResult:
        """Wait for an exec stream to end and read what it left."""
        try:
            resp.run_forever(timeout=timeout)
        except TRANSPORT_ERRORS as err:
            return ExecResult(None, resp.read_stdout() or "", resp.read_stderr() or "", str(translate(what, err, self.server)))
        finished = not resp.is_open()
        stdout = resp.read_stdout() or ""
        stderr = resp.read_stderr() or ""
        if not finished:
            return ExecResult(None, stdout, stderr, f"no exit after {timeout:.0f}s")
        code, problem = exit_code_of(resp.read_channel(_ERROR_CHANNEL))
        if code is None:
            return ExecResult(None, stdout, stderr, f"exec ended without an exit code ({problem})")
        return ExecResult(code, stdout, stderr)

    def interrupt(self) -> None:
        """Abort every open exec stream: its socket is shut down, which wakes the
        worker waiting on it at once (``WebSocket.abort``; a clean close would wait
        for the server's reply first)."""
        with self._streams_lock:
            streams = list(self._streams)
        for resp in streams:
            with suppress(*TRANSPORT_ERRORS):
                resp.sock.abort()

    def exec_many(self, requests: Sequence[ExecRequest], workers: int) -> list[ExecResult]:
        return run_concurrently(self.exec, requests, workers, self.interrupt)

    # -- policies ---------------------------------------------------------------------

    def apply_policy(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply, owned by the harness's field manager."""
        meta = manifest["metadata"]
        what = f"apply NetworkPolicy {meta['namespace']}/{meta['name']}"
        raw = self._request(
            what,
            self.networking.patch_namespaced_network_policy,
            meta["name"],
            meta["namespace"],
            dict(manifest),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        )
        self._check_name(what, "the NetworkPolicy applied", raw, str(meta["name"]))

    def delete_policy(self, namespace: str, name: str) -> bool:
        """False when there was no such policy."""
        what = f"delete NetworkPolicy {namespace}/{name}"
        return self._request(what, self.networking.delete_namespaced_network_policy, name, namespace, absent=(404,)) is not None

    def delete_all_policies(self, namespace: str) -> None:
        what = f"delete the NetworkPolicies of {namespace}"
        self._request(what, self.networking.delete_collection_namespaced_network_policy, namespace)

    # -- custom objects: cluster-scoped policies, Calico's kinds -------------------------

    def served_resources(self, group: str, version: str) -> frozenset[str] | None:
        """The resources the API serves in ``group/version`` (API discovery), None
        when it serves no such group version."""
        what = f"discover the resources of {group}/{version}"
        raw = self._request(what, self.custom.get_api_resources, group, version, absent=(404,))
        if raw is None:
            return None
        found: frozenset[str] = self._view(what, f"the APIResourceList of {group}/{version}", served_resources_of, raw)
        return found

    def _object_call(self, verb: str, resource: ApiResource, namespace: str | None) -> Callable[..., Any]:
        scope = "namespaced" if resource.namespaced else "cluster"
        call: Callable[..., Any] = getattr(self.custom, f"{verb}_{scope}_custom_object")
        if resource.namespaced:
            if not namespace:
                raise ValueError(f"{resource.kind} is namespaced: a namespace is needed")
            return functools.partial(call, resource.group, resource.version, namespace, resource.plural)
        return functools.partial(call, resource.group, resource.version, resource.plural)

    @staticmethod
    def _where(resource: ApiResource, manifest: Mapping[str, Any]) -> tuple[str | None, str]:
        meta = manifest["metadata"]
        return (str(meta["namespace"]) if resource.namespaced else None), str(meta["name"])

    def read_object(self, resource: ApiResource, namespace: str | None, name: str) -> ObjectMeta | None:
        """The metadata of an object, None when there is none."""
        what = f"read {resource.describe(namespace, name)}"
        raw = self._request(what, self._object_call("get", resource, namespace), name, absent=(404,))
        if raw is None:
            return None
        meta: ObjectMeta = self._view(what, f"the {resource.kind} {name}", object_meta_view, raw)
        return meta

    def apply_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        """Server-side apply, owned by the harness's field manager, with strict field validation."""
        namespace, name = self._where(resource, manifest)
        what = f"apply {resource.describe(namespace, name)}"
        raw = self._request(
            what,
            self._object_call("patch", resource, namespace),
            name,
            dict(manifest),
            field_manager=FIELD_MANAGER,
            force=True,
            field_validation=STRICT,
            _content_type=APPLY_PATCH,
        )
        self._check_name(what, f"the {resource.kind} applied", raw, name)

    def create_object(self, resource: ApiResource, manifest: Mapping[str, Any]) -> None:
        """Create an object (the harness's field manager, strict field validation)."""
        namespace, name = self._where(resource, manifest)
        what = f"create {resource.describe(namespace, name)}"
        raw = self._request(
            what,
            self._object_call("create", resource, namespace),
            dict(manifest),
            field_manager=FIELD_MANAGER,
            field_validation=STRICT,
        )
        self._check_name(what, f"the {resource.kind} created", raw, name)

    def delete_object(self, resource: ApiResource, namespace: str | None, name: str) -> bool:
        """False when there was no such object."""
        what = f"delete {resource.describe(namespace, name)}"
        return self._request(what, self._object_call("delete", resource, namespace), name, absent=(404,)) is not None

    def list_objects(self, resource: ApiResource, label_selector: str) -> list[ObjectMeta]:
        """The objects of ``resource`` in every namespace whose labels match
        ``label_selector``; none when the API does not serve that resource."""
        what = f"list {resource.kubectl} ({label_selector})"
        raw = self._request(
            what,
            self.custom.list_cluster_custom_object,
            resource.group,
            resource.version,
            resource.plural,
            label_selector=label_selector,
            absent=(404,),
        )
        if raw is None:
            return []
        return self._list(what, f"a list of {resource.kind} objects", lambda item, where: object_meta_view(item, where), raw)

    def felix_configuration(self, name: str = "default") -> FelixConfigurationView | None:
        """Calico's FelixConfiguration ``name``, None when there is none (or no such API)."""
        what = f"read {FELIX_CONFIGURATION.kubectl}/{name}"
        raw = self._request(what, self._object_call("get", FELIX_CONFIGURATION, None), name, absent=(404,))
        if raw is None:
            return None
        view: FelixConfigurationView = self._view(what, f"the FelixConfiguration {name}", felix_configuration_view, raw)
        return view

    # -- Services -----------------------------------------------------------------------

    def create_service(self, manifest: Mapping[str, Any]) -> ServiceView:
        """Create a Service; as the API server returns it (with its cluster IP)."""
        meta = manifest["metadata"]
        what = f"create Service {meta['namespace']}/{meta['name']}"
        raw = self._request(what, self.core.create_namespaced_service, meta["namespace"], dict(manifest))
        view: ServiceView = self._view(what, f"the Service {meta['name']}", service_view, raw)
        return view

    def read_service(self, namespace: str, name: str) -> ServiceView | None:
        what = f"read Service {namespace}/{name}"
        raw = self._request(what, self.core.read_namespaced_service, name, namespace, absent=(404,))
        if raw is None:
            return None
        view: ServiceView = self._view(what, f"the Service {name}", service_view, raw)
        return view

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete a Service; one that is not there is no error."""
        self._request(f"delete Service {namespace}/{name}", self.core.delete_namespaced_service, name, namespace, absent=(404,))

    def list_endpoint_slices(self, namespace: str, service: str) -> list[EndpointSliceView]:
        """The EndpointSlices of a Service: those labelled ``kubernetes.io/service-name``
        with its name (discovery.k8s.io/v1)."""
        what = f"list the EndpointSlices of Service {namespace}/{service}"
        raw = self._request(
            what, self.discovery.list_namespaced_endpoint_slice, namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
        return self._list(what, "a list of EndpointSlice objects", endpoint_slice_view, raw)


def exit_code_of(status_text: object) -> tuple[int | None, str]:
    """The exit code in the Status object that ends an exec stream (channel 3):
    ``Success`` is 0, a non-zero exit is the ``ExitCode`` cause's message."""
    if not isinstance(status_text, str) or not status_text.strip():
        return None, "no status message"
    try:
        status = yaml.safe_load(status_text)
    except yaml.YAMLError:
        return None, f"status message is not YAML: {_one_line(status_text)}"
    if not isinstance(status, dict):
        return None, f"status message is not an object: {_one_line(status_text)}"
    if status.get("status") == "Success":
        return 0, ""
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    for cause in causes if isinstance(causes, list) else []:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            message = str(cause.get("message", ""))
            if message.isdigit():
                return int(message), ""
    return None, _one_line(status.get("message") or status_text)
