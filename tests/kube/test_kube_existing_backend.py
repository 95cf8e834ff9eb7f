"""``--backend existing --sweep-leftovers``: the namespaces and policy objects
killed runs left behind are deleted before the run, and nothing else is, against a
loopback HTTP server answering as an API server would; and what the cluster's CNI
is found to enforce of the kinds beyond NetworkPolicy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback_api import RESET, SERVER_VERSION, STALL, LoopbackApiServer, Reply, Request, api_error, json_reply

from harness.backends import existing as existing_backend
from harness.backends.base import Options
from harness.backends.cluster.existing import leftover_run
from harness.core.errors import BackendError, BackendUnavailable
from harness.kube.manifests import ANNOTATION_RUN
from harness.kube.views import namespace_view


def namespace(name: str, run: str | None = None, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
    if run is not None:
        meta["annotations"] = {ANNOTATION_RUN: run}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-20T10:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta,
        "status": {"phase": "Terminating" if terminating else "Active"},
    }


NAMESPACES = [
    namespace("default"),
    namespace("kube-system"),
    namespace("nph-old1-shop", "old1"),
    namespace("nph-old1-kube-system", "old1"),
    namespace("nph-gone2-db", "gone2", terminating=True),
    namespace("nph-zz-x", "other"),  # the name and the run annotation disagree: not the harness's
    namespace("team-a", "abc"),  # annotated, but not named nph-
    namespace("nph-abc-y"),  # named nph-, but no run annotation
]


def marked(kind: str, name: str, label: str, annotation: str, namespace: str | None = None) -> dict[str, Any]:
    api = "projectcalico.org/v3" if "Staged" in kind else "policy.networking.k8s.io/v1alpha2"
    meta: dict[str, Any] = {"name": name, "labels": {ANNOTATION_RUN: label}, "annotations": {ANNOTATION_RUN: annotation}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": {}}


#: What a label selector on netpol-harness.io/run lists, per resource path.
OBJECTS = {
    "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies": [
        marked("ClusterNetworkPolicy", "nph-old1-deny", "old1", "old1"),
        marked("ClusterNetworkPolicy", "deny", "old1", "old1"),  # not named as run old1 names its objects
        marked("ClusterNetworkPolicy", "nph-x9-deny", "x9", "y9"),  # the marks disagree
    ],
    "/apis/projectcalico.org/v3/stagednetworkpolicies": [
        marked("StagedNetworkPolicy", "db", "old1", "old1", namespace="nph-old1-shop"),
        marked("StagedNetworkPolicy", "db", "old1", "old1", namespace="team-a"),  # not in a namespace of run old1
    ],
}


class FakeApi:
    """Answers: the version, the namespace list, lists of policy objects, and
    deletions (except those in ``reset``)."""

    def __init__(self, server: LoopbackApiServer) -> None:
        self.server = server
        self.reset: set[str] = set()
        server.answer = self.answer

    def answer(self, request: Request) -> Reply:
        if (request.method, request.path) == ("GET", "/version/"):
            return json_reply(SERVER_VERSION)
        if (request.method, request.path) == ("GET", "/api/v1/namespaces"):
            return json_reply({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": NAMESPACES})
        if request.method == "GET" and request.path in OBJECTS:
            assert request.query == {"labelSelector": [ANNOTATION_RUN]}
            return json_reply({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": OBJECTS[request.path]})
        prefix = "/api/v1/namespaces/"
        if request.method == "DELETE" and request.path.startswith(prefix):
            name = request.path[len(prefix) :]
            if name in self.reset:
                return RESET
            return json_reply(next(ns for ns in NAMESPACES if ns["metadata"]["name"] == name))
        if request.method == "DELETE" and request.path.startswith("/apis/"):
            return json_reply({"kind": "Status", "status": "Success"})
        return api_error(404, "NotFound", f"{request.path} not found")

    def deleted(self) -> list[str]:
        return [r.path.rsplit("/", 1)[1] for r in self.server.requests if r.method == "DELETE" and r.path.startswith("/api/v1/")]

    def deleted_objects(self) -> list[str]:
        return [r.path for r in self.server.requests if r.method == "DELETE" and r.path.startswith("/apis/")]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = LoopbackApiServer()
    yield FakeApi(server)
    server.close()


def test_sweeping_deletes_only_what_killed_runs_left(api: FakeApi, tmp_path: Path) -> None:
    messages: list[str] = []
    backend = existing_backend.create(
        Options(kubeconfig=str(api.server.kubeconfig(tmp_path)), sweep_leftovers=True), messages.append
    )
    backend.close()
    assert sorted(set(api.deleted())) == ["nph-old1-kube-system", "nph-old1-shop"]
    assert api.deleted_objects() == [
        "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/nph-old1-deny",
        "/apis/projectcalico.org/v3/namespaces/nph-old1-shop/stagednetworkpolicies/db",
    ]
    assert "deleting namespace nph-old1-shop, left over by run old1" in messages
    assert "deleting ClusterNetworkPolicy nph-old1-deny, left over by run old1" in messages
    assert "namespace nph-gone2-db of run gone2 is already being deleted" in messages
    assert messages[-1] == "--sweep-leftovers: deleted 2 namespace(s) and 2 policy object(s) of earlier runs"


def test_without_the_option_nothing_is_listed_or_deleted(api: FakeApi, tmp_path: Path) -> None:
    backend = existing_backend.create(Options(kubeconfig=str(api.server.kubeconfig(tmp_path))))
    backend.close()
    assert [(r.method, r.path) for r in api.server.requests] == [("GET", "/version/")]


def test_a_namespace_that_cannot_be_deleted_does_not_stop_the_sweep(api: FakeApi, tmp_path: Path) -> None:
    api.reset = {"nph-old1-kube-system"}
    kubeconfig = api.server.kubeconfig(tmp_path)
    with pytest.raises(BackendError) as err:
        existing_backend.create(Options(kubeconfig=str(kubeconfig), sweep_leftovers=True))
    assert "nph-old1-shop" in api.deleted()
    assert str(err.value) == (
        "--sweep-leftovers could not delete everything earlier runs left:\n"
        f"  - cannot delete namespace nph-old1-kube-system: no answer from the API server at {api.server.url} "
        "(ConnectionResetError: [Errno 104] Connection reset by peer)\n"
        "delete it with:\n"
        f"  kubectl --kubeconfig {kubeconfig} --context loopback delete namespace nph-old1-kube-system"
    )


def test_this_runs_own_namespaces_are_never_leftovers() -> None:
    assert leftover_run(namespace_view(namespace("nph-r1-shop", "r1")), current_run="r1") is None
    assert leftover_run(namespace_view(namespace("nph-r0-shop", "r0")), current_run="r1") == "r0"


def test_the_option_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(pytestconfig):\n    assert pytestconfig.getoption('sweep_leftovers') is True\n")
    pytester.runpytest("--sweep-leftovers").assert_outcomes(passed=1)
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--sweep-leftovers" in help_text and "with --backend existing" in help_text


def test_an_api_server_that_never_answers_stops_the_run_within_its_timeout(tmp_path: Path) -> None:
    """The server accepts the connection and reads the request, and never answers:
    the backend gives up after the 10 s it allows the version request."""
    server = LoopbackApiServer()
    server.answer = lambda request: STALL
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as err:
            existing_backend.create(Options(kubeconfig=str(server.kubeconfig(tmp_path))), progress=lambda _: None)
        waited = time.monotonic() - started
    finally:
        server.close()
    assert 9 <= waited < 20
    assert str(err.value).startswith(f"cannot ask for the Kubernetes version: no answer from the API server at {server.url}")


@pytest.mark.parametrize(
    ("images", "enforces", "why"),
    [
        ({"calico-node": "quay.io/calico/node:v3.32.4"}, ("ClusterNetworkPolicy",), ""),
        ({"calico-node": "quay.io/calico/node:v3.31.7@sha256:0a1b"}, ("AdminNetworkPolicy", "BaselineAdminNetworkPolicy"), ""),
        (
            {"calico-node": "quay.io/calico/node:v3.29.3"},
            (),
            "no recipe in clusters/calico/ records what Calico 3.29 enforces (recipes: 3.31, 3.32, 3.33)",
        ),
        (
            {"cilium": "quay.io/cilium/cilium:v1.18.2"},
            (),
            "the harness knows which of these kinds Calico versions enforce (clusters/calico/*/recipe.yaml), not what this "
            "CNI does, and a CRD alone enforces nothing",
        ),
    ],
)
def test_what_the_cni_enforces_is_decided_from_what_detect_cni_finds(
    images: dict[str, str], enforces: tuple[str, ...], why: str
) -> None:
    from cluster_double import InMemoryCluster

    from harness.backends.cluster.existing import ExistingBackend

    class Cluster(InMemoryCluster):
        def daemonset_images(self, names: tuple[str, ...], namespaces: tuple[str, ...]) -> dict[str, str]:
            return images

    cluster = Cluster()
    support = ExistingBackend(cluster, "agnhost", lambda _: None, "v1.36.4", "r1").policy_support()
    assert (support.admin.kinds if support.admin else ()) == enforces
    assert support.why_not.endswith(why)
    assert support.basis.startswith("the cluster's CNI, from its node agent's DaemonSet: ")
    assert support.calico == ("calico-node" in images)
