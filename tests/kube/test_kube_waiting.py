"""Bounded waits ride out a passing API failure (the real client against a loopback
server that answers 503, 429 or resets before answering properly) and stop at once
on an answer that will not change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback_api import RESET, LoopbackApiServer, Reply, Request, api_error, json_reply

from harness.core.errors import BackendError
from harness.kube.client import KubeClient
from harness.kube.errors import KubeApiError
from harness.kube.views import ready_nodes
from harness.kube.waiting import wait_until

NODES = {
    "kind": "NodeList",
    "items": [{"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}} for n in ("a", "b")],
}


@pytest.fixture
def kube(server: LoopbackApiServer, tmp_path: Path) -> Iterator[KubeClient]:
    client = KubeClient(str(server.kubeconfig(tmp_path)))
    yield client
    client.close()


def answers(*replies: Reply) -> Callable[[Request], Reply]:
    queue = list(replies)

    def answer(request: Request) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return answer


def nodes_ready(kube: KubeClient) -> tuple[bool, str]:
    ready, total = ready_nodes(kube.nodes())
    return ready == total == 2, f"{ready}/{total} Ready"


def test_transient_failures_are_waited_out(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = answers(
        api_error(503, "ServiceUnavailable", "apiserver is shutting down"),
        RESET,
        api_error(429, "TooManyRequests", "the server is currently unable to handle the request"),
        json_reply(NODES),
    )
    messages: list[str] = []
    wait_until(lambda: nodes_ready(kube), limit=10, poll=0.01, message="nodes", progress=messages.append)
    assert len(server.requests) >= 4
    assert any("API server not answering: cannot list nodes: " in m and "answered 503" in m for m in messages)


def test_a_lasting_transient_failure_times_out_with_it_as_the_last_state(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: api_error(503, "ServiceUnavailable", "apiserver is shutting down")
    with pytest.raises(BackendError) as err:
        wait_until(lambda: nodes_ready(kube), limit=0.3, poll=0.05, message="nodes", progress=lambda m: None)
    assert str(err.value).startswith("nodes: gave up after 0s (API server not answering: cannot list nodes: ")
    assert "answered 503: apiserver is shutting down" in str(err.value)


def test_an_answer_that_will_not_change_ends_the_wait_at_once(server: LoopbackApiServer, kube: KubeClient) -> None:
    server.answer = lambda request: api_error(403, "Forbidden", 'nodes is forbidden: User "ci" cannot list resource "nodes"')
    with pytest.raises(KubeApiError) as err:
        wait_until(lambda: nodes_ready(kube), limit=30, poll=0.05, message="nodes", progress=lambda m: None)
    assert err.value.status == 403
    assert len(server.requests) == 1
