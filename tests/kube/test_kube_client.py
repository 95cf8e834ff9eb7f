"""The real Kubernetes client wrapper against a loopback HTTP server that answers as
an API server would, or fails the ways one (or the network in between) can: every
failure is one KubeApiError naming what failed and the server, keeping the HTTP
status, never a traceback of the client's; a bug of the harness stays a bug. The
objects the server answers with are shaped as the API server sends them (the same
fields the client would deserialize)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback_api import (
    HTML_PAGE,
    NOT_HTTP,
    RESET,
    SERVER_VERSION,
    STALL,
    WEBSOCKET_SILENT,
    LoopbackApiServer,
    Reply,
    api_error,
    json_reply,
)

from harness.core.errors import BackendUnavailable
from harness.kube.api import ExecRequest
from harness.kube.client import APPLY_PATCH, FIELD_MANAGER, STRICT, KubeClient, exit_code_of
from harness.kube.errors import KubeApiError
from harness.kube.resources import CLUSTER_NETWORK_POLICY, STAGED_NETWORK_POLICY

POLICY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all", "namespace": "shop"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
CNP: dict[str, Any] = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "deny-dev", "labels": {"netpol-harness.io/run": "r1"}},
    "spec": {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}}},
}
SNP: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "StagedNetworkPolicy",
    "metadata": {"name": "db", "namespace": "shop"},
    "spec": {"selector": "app == 'db'"},
}

Call = Callable[[KubeClient], object]

#: Every call a backend makes, with the words its error must start with.
CALLS: list[tuple[str, Call]] = [
    ("read namespace shop", lambda kube: kube.read_namespace("shop")),
    ("list namespaces", lambda kube: kube.list_namespaces()),
    ("create namespace shop", lambda kube: kube.create_namespace({"metadata": {"name": "shop"}})),
    ("delete namespace shop", lambda kube: kube.delete_namespace("shop")),
    ("relabel namespace shop", lambda kube: kube.set_namespace_labels("shop", {"env": "prod"})),
    ("list nodes", lambda kube: kube.nodes()),
    ("list tigerastatuses", lambda kube: kube.tigera_statuses()),
    ("read installations.operator.tigera.io/default", lambda kube: kube.installation()),
    ("read CustomResourceDefinition x.example.org", lambda kube: kube.crd_exists("x.example.org")),
    ("read DaemonSet calico-system/calico-node", lambda kube: kube.daemonset_images(("calico-node",), ("calico-system",))),
    ("create pod shop/web", lambda kube: kube.create_pod({"metadata": {"name": "web", "namespace": "shop"}})),
    ("list pods in shop", lambda kube: kube.list_pods("shop")),
    ("delete pod shop/web", lambda kube: kube.delete_pod("shop", "web")),
    ("relabel pod shop/web", lambda kube: kube.set_pod_labels("shop", "web", {"app": "web"})),
    ("apply NetworkPolicy shop/deny-all", lambda kube: kube.apply_policy(POLICY)),
    ("delete NetworkPolicy shop/deny-all", lambda kube: kube.delete_policy("shop", "deny-all")),
    ("delete the NetworkPolicies of shop", lambda kube: kube.delete_all_policies("shop")),
    ("discover the resources of projectcalico.org/v3", lambda kube: kube.served_resources("projectcalico.org", "v3")),
    ("read ClusterNetworkPolicy deny-dev", lambda kube: kube.read_object(CLUSTER_NETWORK_POLICY, None, "deny-dev")),
    ("apply ClusterNetworkPolicy deny-dev", lambda kube: kube.apply_object(CLUSTER_NETWORK_POLICY, CNP)),
    ("create StagedNetworkPolicy shop/db", lambda kube: kube.create_object(STAGED_NETWORK_POLICY, SNP)),
    ("delete StagedNetworkPolicy shop/db", lambda kube: kube.delete_object(STAGED_NETWORK_POLICY, "shop", "db")),
    (
        "list clusternetworkpolicies.policy.networking.k8s.io (netpol-harness.io/run)",
        lambda kube: kube.list_objects(CLUSTER_NETWORK_POLICY, "netpol-harness.io/run"),
    ),
    ("read felixconfigurations.projectcalico.org/default", lambda kube: kube.felix_configuration()),
]


@pytest.fixture
def kube(server: LoopbackApiServer, tmp_path: Path) -> Iterator[KubeClient]:
    client = KubeClient(str(server.kubeconfig(tmp_path)), exec_connect_timeout=2.0)
    yield client
    client.close()


@pytest.mark.parametrize(("what", "call"), CALLS, ids=[what for what, _ in CALLS])
def test_a_reset_connection_is_one_transient_error(server: LoopbackApiServer, kube: KubeClient, what: str, call: Call) -> None:
    server.answer = lambda request: RESET
    with pytest.raises(KubeApiError) as err:
        call(kube)
    assert str(err.value) == (
        f"cannot {what}: no answer from the API server at {server.url} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)"
    )
    assert (err.value.status, err.value.transient) == (None, True)
    assert server.requests, "the request reached the server"


def test_bytes_that_are_not_http(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: NOT_HTTP
    with pytest.raises(KubeApiError) as err:
        kube.delete_namespace("shop")
    message = str(err.value)
    assert message.startswith(
        f"cannot delete namespace shop: the API server at {server.url} answered with something that is not HTTP"
    )
    assert "BadStatusLine" in message and "\n" not in message
    assert err.value.transient is False


def test_a_page_that_is_not_the_apis_json(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: HTML_PAGE
    for call in (lambda: kube.read_namespace("shop"), lambda: kube.list_pods("shop"), kube.tigera_statuses):
        with pytest.raises(KubeApiError, match=f" the API server at {server.url} sent a reply that is not a Kubernetes API"):
            call()


def test_json_that_is_not_the_object_asked_for(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: json_reply({"kind": "Status", "items": {"not": "a list"}})
    with pytest.raises(KubeApiError) as err:
        kube.list_pods("shop")
    assert str(err.value) == (
        f"cannot list pods in shop: the API server at {server.url} sent a reply that is not a list of Pod objects "
        "(the list.items is not a list)"
    )
    server.answer = lambda request: json_reply({"kind": "Namespace", "metadata": {"name": "other"}})
    with pytest.raises(KubeApiError, match="sent a reply that is not the Namespace shop \\(it names 'other'\\)$"):
        kube.read_namespace("shop")
    server.answer = lambda request: json_reply({"items": [{"metadata": {"name": "p"}, "status": {"podIP": 7}}]})
    with pytest.raises(KubeApiError, match=r"not a list of Pod objects \(items\[0\].status.podIP is not a string\)$"):
        kube.list_pods("shop")


def test_api_errors_keep_the_status_and_the_servers_message(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: api_error(403, "Forbidden", 'namespaces "shop" is forbidden: User "ci" cannot delete')
    with pytest.raises(KubeApiError) as err:
        kube.delete_namespace("shop")
    assert str(err.value) == (
        f'cannot delete namespace shop: the API server at {server.url} answered 403: namespaces "shop" is forbidden: '
        'User "ci" cannot delete'
    )
    assert (err.value.status, err.value.reason, err.value.transient) == (403, "Forbidden", False)
    # Reading a DaemonSet this user may not read is "not found", for CNI detection.
    assert kube.daemonset_images(("calico-node",), ("calico-system",)) == {}


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_server_errors_are_transient(server: LoopbackApiServer, kube: KubeClient, status: int) -> None:
    reply = api_error(status, "TooManyRequests" if status == 429 else "InternalError", "etcd leader changed")
    server.answer = lambda request: Reply(reply.status, reply.body, headers=(("Retry-After", "2"),))
    with pytest.raises(KubeApiError) as err:
        kube.nodes()
    assert err.value.status == status and err.value.transient
    assert err.value.retry_after == 2.0
    assert str(err.value).endswith(f"answered {status}: etcd leader changed")


def test_a_bug_of_the_harness_is_not_a_bad_reply(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: json_reply({"kind": "Namespace", "metadata": {"name": "shop"}})
    # The client rejects an argument it does not know (its ApiTypeError is a TypeError):
    # that is a mistake in the call, and must surface as one.
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        kube._request("read namespace shop", kube.core.read_namespace, "shop", no_such_argument=True)
    with pytest.raises(KeyError):
        kube.create_namespace({"meta": {"name": "shop"}})
    assert not server.requests


def test_absent_objects_are_not_errors(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: api_error(404, "NotFound", "not found")
    assert kube.read_namespace("shop") is None
    kube.delete_namespace("shop")
    kube.delete_pod("shop", "web")
    assert kube.delete_policy("shop", "deny-all") is False
    assert kube.tigera_statuses() == []  # the CRD is not installed yet
    assert kube.installation() is None
    assert kube.crd_exists("felixconfigurations.crd.projectcalico.org") is False
    assert kube.served_resources("projectcalico.org", "v3") is None  # no Calico API server
    assert kube.read_object(CLUSTER_NETWORK_POLICY, None, "x") is None
    assert kube.delete_object(STAGED_NETWORK_POLICY, "shop", "db") is False
    assert kube.list_objects(CLUSTER_NETWORK_POLICY, "a") == []  # the CRD is not installed
    assert kube.felix_configuration() is None
    assert [r.method for r in server.requests] == [
        "GET",
        "DELETE",
        "DELETE",
        "DELETE",
        "GET",
        "GET",
        "GET",
        "GET",
        "GET",
        "DELETE",
        "GET",
        "GET",
    ]


#: A TigeraStatus and the Installation as the operator writes them (tigera/operator
#: api/v1/tigerastatus_types.go, installation_types.go; conditions set by
#: pkg/controller/status/status.go, calicoVersion by the core controller).
TIGERASTATUS_CALICO = {
    "apiVersion": "operator.tigera.io/v1",
    "kind": "TigeraStatus",
    "metadata": {"name": "calico", "generation": 1},
    "spec": {},
    "status": {
        "conditions": [
            {
                "type": "Available",
                "status": "False",
                "reason": "Unknown",
                "message": "",
                "lastTransitionTime": "2026-12-01T10:00:05Z",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "ResourceNotReady",
                "message": 'DaemonSet "calico-system/calico-node" update is rolling out (1 out of 3 updated)',
                "lastTransitionTime": "2026-12-01T10:00:05Z",
                "observedGeneration": 2,
            },
            {
                "type": "Degraded",
                "status": "False",
                "reason": "Unknown",
                "message": "",
                "lastTransitionTime": "2026-12-01T10:00:00Z",
            },
        ]
    },
}
INSTALLATION = {
    "apiVersion": "operator.tigera.io/v1",
    "kind": "Installation",
    "metadata": {"name": "default", "generation": 2},
    "spec": {"variant": "Calico"},
    "status": {
        "variant": "Calico",
        "calicoVersion": "v3.31.7",
        "mtu": 1450,
        "imageSet": "",
        "computed": {"variant": "Calico"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllObjectsAvailable", "message": "All Objects are available"}
        ],
    },
}


def test_operator_objects_are_read_into_views(server: LoopbackApiServer, kube: KubeClient) -> None:
    replies = {
        "/apis/operator.tigera.io/v1/tigerastatuses": json_reply({"kind": "TigeraStatusList", "items": [TIGERASTATUS_CALICO]}),
        "/apis/operator.tigera.io/v1/installations/default": json_reply(INSTALLATION),
    }
    server.answer = lambda request: replies.get(request.path, Reply(500))
    (calico,) = kube.tigera_statuses()
    assert (calico.name, calico.available, calico.progressing, calico.degraded, calico.settled) == (
        "calico",
        False,
        True,
        False,
        False,
    )
    assert calico.describe() == (
        'calico: Progressing (DaemonSet "calico-system/calico-node" update is rolling out (1 out of 3 updated))'
    )
    installation = kube.installation()
    assert installation is not None and (installation.calico_version, installation.variant) == ("v3.31.7", "Calico")


def test_policies_are_applied_server_side_by_the_harness(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: json_reply({**POLICY, "metadata": {**POLICY["metadata"], "uid": "1"}})
    kube.apply_policy(POLICY)
    (request,) = server.requests
    assert (request.method, request.path) == ("PATCH", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/deny-all")
    assert request.headers["content-type"] == APPLY_PATCH
    # The client writes booleans as Python does; the API server reads anything but "0" and "false" as true.
    assert request.query == {"fieldManager": [FIELD_MANAGER], "force": ["True"]}
    assert json.loads(request.body) == POLICY


def test_custom_objects_are_applied_server_side_strictly_and_found_by_label(server: LoopbackApiServer, kube: KubeClient) -> None:
    """Cluster-scoped and namespaced custom objects: the paths of the API, server-side
    apply by the harness's field manager with strict field validation (a field the CRD
    does not know is an error, never dropped), and lists by label selector."""
    replies = {
        ("PATCH", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/deny-dev"): json_reply(CNP),
        ("POST", "/apis/projectcalico.org/v3/namespaces/shop/stagednetworkpolicies"): json_reply(SNP),
        ("GET", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"): json_reply(
            {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicyList", "items": [CNP]}
        ),
        # What Calico's API server lists (apiserver/pkg/registry/projectcalico/rest/storage_calico.go).
        ("GET", "/apis/projectcalico.org/v3"): json_reply(
            {
                "kind": "APIResourceList",
                "groupVersion": "projectcalico.org/v3",
                "resources": [
                    {"name": "stagednetworkpolicies", "namespaced": True, "kind": "StagedNetworkPolicy", "verbs": ["get"]},
                    {"name": "kubecontrollersconfigurations/status", "namespaced": False, "kind": "X", "verbs": ["get"]},
                ],
            }
        ),
        ("GET", "/apis/projectcalico.org/v3/felixconfigurations/default"): json_reply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "FelixConfiguration",
                "metadata": {"name": "default"},
                "spec": {"iptablesFilterDenyAction": "Reject"},
            }
        ),
    }
    server.answer = lambda request: replies.get((request.method, request.path), api_error(404, "NotFound", "no"))
    kube.apply_object(CLUSTER_NETWORK_POLICY, CNP)
    kube.create_object(STAGED_NETWORK_POLICY, SNP)
    (listed,) = kube.list_objects(CLUSTER_NETWORK_POLICY, "netpol-harness.io/run")
    assert kube.served_resources("projectcalico.org", "v3") == frozenset({"stagednetworkpolicies"})
    felix = kube.felix_configuration()
    assert felix is not None and (felix.iptables_deny_action, felix.nftables_deny_action) == ("Reject", "")
    apply, create, listing, _, _ = server.requests
    assert apply.headers["content-type"] == APPLY_PATCH
    assert apply.query == {"fieldManager": [FIELD_MANAGER], "fieldValidation": [STRICT], "force": ["True"]}
    assert json.loads(apply.body) == CNP
    assert create.query == {"fieldManager": [FIELD_MANAGER], "fieldValidation": [STRICT]} and json.loads(create.body) == SNP
    assert listing.query == {"labelSelector": ["netpol-harness.io/run"]}
    assert (listed.name, dict(listed.labels)) == ("deny-dev", {"netpol-harness.io/run": "r1"})


def test_an_unreachable_server_at_start_is_unavailable_with_a_hint(server: LoopbackApiServer, tmp_path: Path) -> None:
    kube = KubeClient(str(server.kubeconfig(tmp_path)))
    server.answer = lambda request: RESET
    with pytest.raises(BackendUnavailable) as err:
        kube.server_version(timeout=5)
    kube.close()
    assert str(err.value).startswith(f"cannot ask for the Kubernetes version: no answer from the API server at {server.url}")
    assert str(err.value).endswith("Check that the cluster runs and that the kubeconfig and context are the right ones")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("clusters: [unclosed\n", "it is not valid YAML (expected ',' or ']', but got '<stream end>' at line 2)"),
        ("hello world\n", "it is not a kubeconfig (expected a YAML mapping with clusters, users and contexts)"),
        ("- a\n- b\n", "it is not a kubeconfig (expected a YAML mapping with clusters, users and contexts)"),
    ],
    ids=["not-yaml", "a-string", "a-list"],
)
def test_a_garbage_kubeconfig_is_named_with_what_is_wrong(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(BackendUnavailable) as err:
        KubeClient(str(path))
    assert str(err.value) == (
        f"cannot load {path}: {reason}. Point --kubeconfig (or KUBECONFIG) at the kubeconfig of the cluster to test"
    )


def test_a_working_server_is_read(server: LoopbackApiServer, kube: KubeClient) -> None:
    replies = {
        "/version/": json_reply(SERVER_VERSION),
        "/api/v1/namespaces/shop": json_reply(
            {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "shop", "labels": {"env": "prod"}}}
        ),
    }
    server.answer = lambda request: replies.get(request.path, Reply(500))
    assert kube.server_version() == "v1.33.4"
    namespace = kube.read_namespace("shop")
    assert namespace is not None and (namespace.name, dict(namespace.meta.labels)) == ("shop", {"env": "prod"})
    assert kube.context == "loopback"


# -- exec -------------------------------------------------------------------------------

EXEC = ExecRequest("shop", "web", "agnhost", ("true",), 5)


def test_exec_failures_are_results_with_the_guards_message(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: RESET
    result = kube.exec(EXEC)
    assert (result.exit_code, result.stdout) == (None, "")
    assert result.error == (
        f"cannot run a command in pod shop/web: no answer from the API server at {server.url} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)"
    )
    assert server.requests[-1].path == "/api/v1/namespaces/shop/pods/web/exec"
    assert server.requests[-1].headers["upgrade"].lower() == "websocket"

    server.answer = lambda request: api_error(403, "Forbidden", 'pods "web" is forbidden: cannot create resource "pods/exec"')
    result = kube.exec(EXEC)
    assert result.error == (
        f"cannot run a command in pod shop/web: the API server at {server.url} answered 403 instead of opening the exec "
        'stream: pods "web" is forbidden: cannot create resource "pods/exec"'
    )


def test_an_exec_whose_upgrade_is_never_answered_gives_up_at_the_connect_timeout(
    server: LoopbackApiServer, kube: KubeClient
) -> None:
    server.answer = lambda request: STALL
    started = time.monotonic()
    result = kube.exec(ExecRequest("shop", "web", "agnhost", ("true",), 60))
    assert time.monotonic() - started < 10
    assert result.exit_code is None
    assert result.error.startswith(f"cannot run a command in pod shop/web: no answer from the API server at {server.url}")
    assert "timed out" in result.error


def interrupt_after(seconds: float) -> threading.Timer:
    """Ctrl-C in the main thread, as the terminal delivers it: SIGINT, which also
    interrupts a blocking socket call."""
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(seconds, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_while_an_exec_connects_is_an_interruption(server: LoopbackApiServer, tmp_path: Path) -> None:
    # The client turns KeyboardInterrupt raised while connecting into an ApiException
    # with status 0 (kubernetes/stream/ws_client.py, websocket_call): it must come back out.
    kube = KubeClient(str(server.kubeconfig(tmp_path)), exec_connect_timeout=30)
    server.answer = lambda request: STALL
    timer = interrupt_after(0.5)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            kube.exec(EXEC)
    finally:
        timer.cancel()
        kube.close()
    assert time.monotonic() - started < 5


def test_ctrl_c_during_several_execs_closes_their_streams(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: WEBSOCKET_SILENT
    requests = [ExecRequest("shop", name, "agnhost", ("sleep", "60"), 60) for name in ("a", "b")]
    timer = interrupt_after(1.0)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            kube.exec_many(requests, workers=2)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 6
    # Both streams were opened and closed by the client, and no exec thread is left.
    deadline = time.monotonic() + 5
    while len(server.closed_by_client) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(server.closed_by_client) == ["/api/v1/namespaces/shop/pods/a/exec", "/api/v1/namespaces/shop/pods/b/exec"]
    assert not [t for t in threading.enumerate() if t.name.startswith("netpol-exec")]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # The Status objects that end an exec stream on its channel 3 (kubernetes
        # apimachinery; "NonZeroExitCode" with the code as the ExitCode cause).
        ('{"metadata":{},"status":"Success"}', (0, "")),
        (
            '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing '
            'command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode",'
            '"message":"3"}]}}',
            (3, ""),
        ),
        ("", (None, "no status message")),
        (
            '{"metadata":{},"status":"Failure","message":"container not found","reason":"InternalError"}',
            (None, "container not found"),
        ),
        ("[1, 2]", (None, "status message is not an object: [1, 2]")),
    ],
)
def test_exit_codes_come_from_the_streams_status_message(status: str, expected: tuple[int | None, str]) -> None:
    assert exit_code_of(status) == expected
