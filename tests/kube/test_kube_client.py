"""The real Kubernetes client wrapper against a loopback HTTP server that fails the
ways an API server, or the network in between, can: every failure is one
BackendError naming what failed and the server, never a traceback of the client's."""

from __future__ import annotations

import json

import pytest
from loopback_api import HTML_PAGE, NOT_HTTP, RESET, SERVER_VERSION, LoopbackApiServer, Reply, api_error, json_reply

from harness.core.errors import BackendError, BackendUnavailable
from harness.kube.client import APPLY_PATCH, FIELD_MANAGER, KubeClient

POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all", "namespace": "shop"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}

#: Every call a backend makes, with the words its error must start with.
CALLS = [
    ("read namespace shop", lambda kube: kube.read_namespace("shop")),
    ("list namespaces", lambda kube: kube.list_namespaces()),
    ("create namespace shop", lambda kube: kube.create_namespace({"metadata": {"name": "shop"}})),
    ("delete namespace shop", lambda kube: kube.delete_namespace("shop")),
    ("relabel namespace shop", lambda kube: kube.set_namespace_labels("shop", {"env": "prod"})),
    ("list nodes", lambda kube: kube.node_readiness()),
    ("list tigerastatuses", lambda kube: kube.tigera_statuses()),
    ("read DaemonSet calico-system/calico-node", lambda kube: kube.daemonset_images(("calico-node",), ("calico-system",))),
    ("create pod shop/web", lambda kube: kube.create_pod({"metadata": {"name": "web", "namespace": "shop"}})),
    ("list pods in shop", lambda kube: kube.list_pods("shop")),
    ("delete pod shop/web", lambda kube: kube.delete_pod("shop", "web")),
    ("relabel pod shop/web", lambda kube: kube.set_pod_labels("shop", "web", {"app": "web"})),
    ("apply NetworkPolicy shop/deny-all", lambda kube: kube.apply_policy(POLICY)),
    ("delete NetworkPolicy shop/deny-all", lambda kube: kube.delete_policy("shop", "deny-all")),
    ("delete the NetworkPolicies of shop", lambda kube: kube.delete_all_policies("shop")),
]


@pytest.fixture
def server():
    api = LoopbackApiServer()
    yield api
    api.close()


@pytest.fixture
def kube(server, tmp_path):
    client = KubeClient(str(server.kubeconfig(tmp_path)))
    yield client
    client.close()


@pytest.mark.parametrize(("what", "call"), CALLS, ids=[what for what, _ in CALLS])
def test_a_reset_connection_is_one_backend_error(server, kube, what, call):
    server.answer = lambda request: RESET
    with pytest.raises(BackendError) as err:
        call(kube)
    assert str(err.value) == (
        f"cannot {what}: no answer from the API server at {server.url} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)"
    )
    assert server.requests, "the request reached the server"


def test_bytes_that_are_not_http(server, kube):
    server.answer = lambda request: NOT_HTTP
    with pytest.raises(BackendError) as err:
        kube.delete_namespace("shop")
    message = str(err.value)
    assert message.startswith(
        f"cannot delete namespace shop: the API server at {server.url} answered with something that is not HTTP"
    )
    assert "BadStatusLine" in message and "\n" not in message


def test_a_page_that_is_not_the_apis_json(server, kube):
    server.answer = lambda request: HTML_PAGE
    with pytest.raises(
        BackendError,
        match=f"^cannot read namespace shop: the API server at {server.url} sent a reply that is not the Namespace shop$",
    ):
        kube.read_namespace("shop")
    with pytest.raises(BackendError, match="^cannot list pods in shop: .* not a Kubernetes API response \\(ValueError: "):
        kube.list_pods("shop")
    with pytest.raises(BackendError, match="^cannot list tigerastatuses: .* not a list of TigeraStatus objects$"):
        kube.tigera_statuses()
    with pytest.raises(BackendError, match="^cannot apply NetworkPolicy shop/deny-all: .* not the NetworkPolicy applied$"):
        kube.apply_policy(POLICY)


def test_api_errors_carry_the_servers_message(server, kube):
    server.answer = lambda request: api_error(403, "Forbidden", 'namespaces "shop" is forbidden: User "ci" cannot delete')
    with pytest.raises(BackendError) as err:
        kube.delete_namespace("shop")
    assert str(err.value) == (
        f'cannot delete namespace shop: the API server at {server.url} answered 403: namespaces "shop" is forbidden: '
        'User "ci" cannot delete'
    )
    # Reading a DaemonSet this user may not read is "not found", for CNI detection.
    assert kube.daemonset_images(("calico-node",), ("calico-system",)) == {}


def test_absent_objects_are_not_errors(server, kube):
    server.answer = lambda request: api_error(404, "NotFound", "not found")
    assert kube.read_namespace("shop") is None
    kube.delete_namespace("shop")
    kube.delete_pod("shop", "web")
    assert kube.delete_policy("shop", "deny-all") is False
    assert kube.tigera_statuses() == {}  # the CRD is not installed yet
    assert [r.method for r in server.requests] == ["GET", "DELETE", "DELETE", "DELETE", "GET"]


def test_exec_failures_are_results_with_the_guards_message(server, kube):
    server.answer = lambda request: RESET
    result = kube.exec("shop", "web", "agnhost", ["true"], timeout=5)
    assert (result.exit_code, result.stdout) == (None, "")
    assert result.error == (
        f"cannot run a command in pod shop/web: no answer from the API server at {server.url} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)"
    )
    assert server.requests[-1].path == "/api/v1/namespaces/shop/pods/web/exec"
    assert server.requests[-1].headers["upgrade"].lower() == "websocket"

    server.answer = lambda request: api_error(403, "Forbidden", 'pods "web" is forbidden: cannot create resource "pods/exec"')
    result = kube.exec("shop", "web", "agnhost", ["true"], timeout=5)
    assert result.error == (
        f"cannot run a command in pod shop/web: the API server at {server.url} answered 403 instead of opening the exec "
        'stream: pods "web" is forbidden: cannot create resource "pods/exec"'
    )


def test_policies_are_applied_server_side_by_the_harness(server, kube):
    server.answer = lambda request: json_reply({**POLICY, "metadata": {**POLICY["metadata"], "uid": "1"}})
    kube.apply_policy(POLICY)
    (request,) = server.requests
    assert (request.method, request.path) == ("PATCH", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/deny-all")
    assert request.headers["content-type"] == APPLY_PATCH
    # The client writes booleans as Python does; the API server reads anything but "0" and "false" as true.
    assert request.query == {"fieldManager": [FIELD_MANAGER], "force": ["True"]}
    assert json.loads(request.body) == POLICY


def test_an_unreachable_server_at_start_is_unavailable_with_a_hint(server, tmp_path):
    kube = KubeClient(str(server.kubeconfig(tmp_path)))
    server.answer = lambda request: RESET
    with pytest.raises(BackendUnavailable) as err:
        kube.server_version(timeout=5)
    kube.close()
    assert str(err.value).startswith(f"cannot ask for the Kubernetes version: no answer from the API server at {server.url}")
    assert str(err.value).endswith("Check that the cluster runs and that the kubeconfig and context are the right ones")


def test_a_working_server_is_read(server, kube):
    replies = {
        "/version/": json_reply(SERVER_VERSION),
        "/api/v1/namespaces/shop": json_reply({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "shop"}}),
    }
    server.answer = lambda request: replies.get(request.path, Reply(500))
    assert kube.server_version() == "v1.33.4"
    assert kube.read_namespace("shop") == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
