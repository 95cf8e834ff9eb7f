"""A kind cluster brought up from start to end: created, given the probe image,
Calico installed and awaited, then deleted; and deleted too when Ctrl-C comes in the
middle. No cluster can run here: `kind`, `docker` and `kubectl` are scripts that
record their arguments (kind's `create cluster` writes a kubeconfig with the kind
context, as kind does), and the API server is a loopback HTTP server, which the real
Python client reads: its nodes, and the Installation and TigeraStatus objects of a
fresh install as the Tigera operator writes them (shapes from tigera/operator, as in
recorded/calico-upgrade-3.31-to-3.32.yaml)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopback_api import LoopbackApiServer, Reply, Request, api_error, json_reply

from harness.backends.kind.backend import CLUSTER_LABEL, CLUSTER_LABEL_VALUE, _bring_up
from harness.core.errors import HarnessError
from harness.kube.calico import CalicoRecipe, DenyAction, resolve_release
from harness.kube.client import APPLY_PATCH, FIELD_MANAGER
from harness.kube.tools import CONTAINERD_SNAPSHOTTER, DockerInfo, KindTools
from harness.kube.versions import PinnedVersions

STATES = yaml.safe_load((Path(__file__).parent / "recorded" / "calico-upgrade-3.31-to-3.32.yaml").read_text())["states"]
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
NODE_IMAGE = "kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed"
DOCKER_29 = DockerInfo("29.4.0", "1.52", "linux", "amd64", "overlayfs", (("driver-type", CONTAINERD_SNAPSHOTTER),))


def fresh_install_states() -> list[dict[str, Any]]:
    """The operator after `kubectl apply` of a fresh install: no TigeraStatus yet,
    then calico progressing with an Installation without status (read by the wait
    for tigerastatus/calico, then by the wait for the release), then settled."""
    settled = STATES[-1]
    progressing = copy.deepcopy(STATES[1])
    progressing["installation"]["status"] = {}
    return [{"installation": None, "tigerastatuses": None}, progressing, progressing, settled]


class FakeApiServer:
    """Answers as an API server with the operator's objects going through ``states``:
    every TigeraStatus list is of the next state, and the Installation read after it
    of the same state."""

    def __init__(self, server: LoopbackApiServer, states: list[dict[str, Any]]) -> None:
        self.server = server
        self.states = states
        self.step = -1
        server.answer = self.answer

    def answer(self, request: Request) -> Reply:
        if request.path == "/apis/operator.tigera.io/v1/tigerastatuses":
            self.step += 1
        state = self.states[min(max(self.step, 0), len(self.states) - 1)]
        if request.path.startswith("/version"):
            return json_reply({"major": "1", "minor": "36", "gitVersion": "v1.36.4"})
        if request.path == "/api/v1/nodes":
            nodes = [
                {
                    "metadata": {"name": f"nph-{role}", "labels": {CLUSTER_LABEL: CLUSTER_LABEL_VALUE}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
                for role in ("control-plane", "worker", "worker2")
            ]
            return json_reply({"kind": "NodeList", "items": nodes})
        if request.path == "/apis/operator.tigera.io/v1/tigerastatuses":
            if state["tigerastatuses"] is None:
                return api_error(404, "NotFound", "the server could not find the requested resource")
            return json_reply({"kind": "TigeraStatusList", "items": state["tigerastatuses"]})
        if request.path == "/apis/operator.tigera.io/v1/installations/default" and state["installation"] is not None:
            return json_reply(state["installation"])
        if (request.method, request.path) == ("PATCH", "/apis/projectcalico.org/v3/felixconfigurations/default"):
            return json_reply(json.loads(request.body))  # what a server-side apply returns: the object
        return api_error(404, "NotFound", f"{request.path} not found")


def script(path: Path, log: Path, body: str) -> Path:
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n{body}\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def api(server: LoopbackApiServer) -> LoopbackApiServer:
    return server


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def tools_for(tmp_path: Path, api: LoopbackApiServer) -> KindTools:
    kubeconfig = (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: kind-nph\n  cluster: {{server: {api.url}}}\n"
        "users:\n- name: kind-nph\n  user: {token: not-a-token}\n"
        "contexts:\n- name: kind-nph\n  context: {cluster: kind-nph, user: kind-nph}\n"
        "current-context: kind-nph\n"
    )
    kind = script(
        tmp_path / "kind",
        tmp_path / "kind.log",
        'case "$1 $2" in\n'
        '  "create cluster") while [ "$1" != --kubeconfig ]; do shift; done\n'
        f"    cat > \"$2\" <<'EOF'\n{kubeconfig}EOF\n    ;;\n"
        '  "load image-archive") test -s "$3" || exit 9 ;;\n'
        "esac\n"
        'case "$1" in version) echo "kind v0.33.0 go1.26.7 linux/amd64" ;; esac',
    )
    docker = script(
        tmp_path / "docker",
        tmp_path / "docker.log",
        'case "$1 $2" in "image save") while [ "$1" != --output ]; do shift; done; echo archive > "$2" ;; esac',
    )
    kubectl = script(tmp_path / "kubectl", tmp_path / "kubectl.log", "")
    return KindTools(kind, kubectl, docker, DOCKER_29)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_cluster_is_created_given_the_image_and_calico_and_deleted_again(
    tmp_path: Path,
    workdir: Path,
    api: LoopbackApiServer,
    clusters: Path,
    versions: PinnedVersions,
    recipes: dict[str, CalicoRecipe],
) -> None:
    FakeApiServer(api, fresh_install_states())
    release = resolve_release("3.32", versions, recipes)
    tools = tools_for(tmp_path, api)
    messages: list[str] = []
    backend = _bring_up("nph", False, None, NODE_IMAGE, IMAGE, release, tools, False, clusters, messages.append)
    kubeconfig = workdir / ".pytest-kind" / "nph" / "kubeconfig"
    create, load, _version = lines(tmp_path / "kind.log")
    assert create == (
        f"create cluster --name nph --config {clusters / 'kind-calico.yaml'} --image {NODE_IMAGE} "
        f"--kubeconfig {kubeconfig} --wait 0s"
    )
    assert load.startswith("load image-archive ") and load.endswith("/probe-image.tar --name nph")
    (save,) = [line for line in lines(tmp_path / "docker.log") if line.startswith("image save")]
    assert save.startswith("image save --platform linux/amd64 --output ") and save.endswith(f"/probe-image.tar {IMAGE}")
    applies = lines(tmp_path / "kubectl.log")
    base = f"https://raw.githubusercontent.com/projectcalico/calico/{release.version}/manifests"
    assert applies == [
        f"--kubeconfig {kubeconfig} --context kind-nph apply --server-side --force-conflicts -f {base}/{name}"
        for name in ("v1_crd_projectcalico_org.yaml", "tigera-operator.yaml", "custom-resources.yaml")
    ]
    assert any("reports calicoVersion (none yet)" in m for m in messages)
    assert f"Calico {release.version} is available" in messages
    assert backend.info().cni_version == release.version
    assert backend.kubectl_target() == (str(kubeconfig), "kind-nph")
    backend.close()
    assert lines(tmp_path / "kind.log")[-1] == f"delete cluster --name nph --kubeconfig {kubeconfig}"
    assert list(workdir.iterdir()) == []


def test_deny_action_reject_sets_felix_on_the_cluster_the_run_creates(
    tmp_path: Path,
    workdir: Path,
    api: LoopbackApiServer,
    clusters: Path,
    versions: PinnedVersions,
    recipes: dict[str, CalicoRecipe],
) -> None:
    """Once Calico is available: a server-side apply of the FelixConfiguration default
    with both dataplanes' deny action, by the harness's field manager; the backend
    then reads refusals as blocks."""
    FakeApiServer(api, fresh_install_states())
    release = resolve_release("3.32", versions, recipes)
    messages: list[str] = []
    backend = _bring_up(
        "nph",
        False,
        None,
        NODE_IMAGE,
        IMAGE,
        release,
        tools_for(tmp_path, api),
        False,
        clusters,
        messages.append,
        DenyAction.REJECT,
    )
    (apply,) = [r for r in api.requests if r.method == "PATCH"]
    assert apply.path == "/apis/projectcalico.org/v3/felixconfigurations/default"
    assert apply.headers["content-type"] == APPLY_PATCH and apply.query["fieldManager"] == [FIELD_MANAGER]
    assert json.loads(apply.body)["spec"] == {"iptablesFilterDenyAction": "Reject", "nftablesFilterDenyAction": "Reject"}
    assert backend.rejects and backend.deny_action is DenyAction.REJECT
    assert backend.info().details["deny_action"] == "reject"  # in every report of the run
    assert any("Felix now denies with REJECT" in m for m in messages)
    backend.close()


def test_ctrl_c_during_the_calico_install_still_deletes_the_cluster(
    tmp_path: Path,
    workdir: Path,
    api: LoopbackApiServer,
    clusters: Path,
    versions: PinnedVersions,
    recipes: dict[str, CalicoRecipe],
) -> None:
    FakeApiServer(api, fresh_install_states())
    release = resolve_release("3.32", versions, recipes)

    def progress(message: str) -> None:
        if "kubectl apply" in message and "tigera-operator.yaml" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _bring_up("nph", False, None, NODE_IMAGE, IMAGE, release, tools_for(tmp_path, api), False, clusters, progress)
    assert lines(tmp_path / "kind.log")[-1].startswith("delete cluster --name nph --kubeconfig ")
    assert list(workdir.iterdir()) == []


def test_a_reused_cluster_that_someone_else_made_is_left_alone(
    tmp_path: Path,
    workdir: Path,
    api: LoopbackApiServer,
    clusters: Path,
    versions: PinnedVersions,
    recipes: dict[str, CalicoRecipe],
) -> None:
    fake = FakeApiServer(api, fresh_install_states())
    original = fake.answer

    def unmarked(request: Request) -> Reply:
        if request.path == "/api/v1/nodes":
            return json_reply({"kind": "NodeList", "items": [{"metadata": {"name": "kind-control-plane"}}]})
        return original(request)

    api.answer = unmarked
    tools = tools_for(tmp_path, api)
    # The cluster exists: its kubeconfig comes from `kind get kubeconfig`.
    script(tools.kind, tmp_path / "kind.log", f"cat {tmp_path / 'kubeconfig'}")
    (tmp_path / "kubeconfig").write_text(
        f"apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {api.url}}}\nusers:\n- name: u\n"
        "  user: {token: t}\ncontexts:\n- name: kind-nph\n  context: {cluster: c, user: u}\ncurrent-context: kind-nph\n"
    )
    release = resolve_release("3.32", versions, recipes)
    with pytest.raises(HarnessError, match="kind cluster nph was not created by netpol-harness"):
        _bring_up("nph", False, None, NODE_IMAGE, IMAGE, release, tools, True, clusters, lambda m: None)
    assert [line for line in lines(tmp_path / "kind.log") if line.startswith(("delete", "load", "create"))] == []
    assert lines(tmp_path / "kubectl.log") == []
    assert list(workdir.iterdir()) == []
