"""Missing pieces stop the kind and existing backends within seconds, with what is
missing and how to get it, and leave nothing behind. Tools are hidden by running
with PATH set to real directories that hold (links to) only some of them. What the
Docker daemon says about itself is read by the real docker client from a fake
daemon on a unix socket (tests/kube/docker_daemon.py), answering as Docker 29 with
the containerd image store and Docker 28 with the classic store answer."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_daemon import DOCKER_28_CLASSIC_STORE, DOCKER_29_CONTAINERD_STORE, FakeDockerDaemon

from harness.backends import existing as existing_backend
from harness.backends import kind as kind_backend
from harness.backends.base import Options
from harness.backends.kind.backend import preflight_report
from harness.core.errors import BackendUnavailable
from harness.kube.tools import (
    ImageTransfer,
    KindTools,
    check_images,
    docker_daemon,
    docker_daemon_problem,
    image_transfer,
    save_command,
    url_problem,
)

DOCKER = shutil.which("docker")
KUBECTL = shutil.which("kubectl")


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, to see that nothing is left in it."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH directory holding links to the named real tools only, plus the
    directory of this Python (its tools are not the ones under test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        real = shutil.which(tool)
        assert real, f"{tool} is needed on this machine for this test"
        (bin_dir / tool).symlink_to(real)
    return f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}"


def create_kind(**options: object) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        kind_backend.create(Options(**options))
    return str(err.value), time.monotonic() - started


def daemon_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real docker client pointed at a socket where no daemon listens."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


@pytest.mark.skipif(DOCKER is None or KUBECTL is None, reason="needs the docker client and kubectl")
def test_no_kind_and_no_docker_daemon(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, "docker", "kubectl"))
    daemon_unreachable(monkeypatch, tmp_path)
    message, took = create_kind()
    assert took < 30
    assert "kind is not installed (not on PATH, and no --kind-bin given)" in message
    assert "go install sigs.k8s.io/kind@v0.33.0" in message
    assert "https://github.com/kubernetes-sigs/kind/releases/tag/v0.33.0" in message
    assert "the Docker daemon is not reachable" in message and "systemctl start docker" in message
    assert "kubectl is not installed" not in message
    assert list(workdir.iterdir()) == []  # no .pytest-kind, no kubeconfig


def test_nothing_installed(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    message, took = create_kind()
    assert took < 30
    assert "kind is not installed" in message
    assert "kubectl is not installed (not on PATH, and no --kind-kubectl-bin given). Install kubectl v1.36.4" in message
    assert "docker is not installed" in message and "https://docs.docker.com/engine/install/" in message
    assert list(workdir.iterdir()) == []


def test_explicit_paths_that_are_not_executables(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    not_executable = tmp_path / "kind"
    not_executable.write_text("not a program\n")
    message, _ = create_kind(kind_bin=str(not_executable), kind_kubectl_bin=str(tmp_path / "missing" / "kubectl"))
    assert f"--kind-bin {not_executable}: no executable file there" in message
    assert f"--kind-kubectl-bin {tmp_path / 'missing' / 'kubectl'}: no executable file there" in message


@pytest.mark.skipif(DOCKER is None, reason="needs the docker client")
def test_unreachable_docker_daemon_is_reported_by_the_real_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon_unreachable(monkeypatch, tmp_path)
    started = time.monotonic()
    problem = docker_daemon_problem(Path(DOCKER or "docker"))
    assert time.monotonic() - started < 15
    assert problem is not None
    assert "no-docker.sock" in problem and "Start it" in problem


@pytest.mark.skipif(DOCKER is None, reason="needs the docker client")
def test_image_that_cannot_be_pulled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry address on loopback where nothing listens: the real client asks it and fails.
    daemon_unreachable(monkeypatch, tmp_path)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    image = f"127.0.0.1:{closed_port()}/netpol/missing:1.0"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        check_images(Path(DOCKER or "docker"), [image], timeout=20)
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert f"cannot pull {image}" in message
    assert f"docker pull {image}" in message and "docker load" in message


def test_unknown_calico_version_fails_before_any_tool_is_looked_for(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    message, _ = create_kind(calico_version=["3.12"])
    assert "no install recipe for Calico 3.12; supported: 3.31, 3.32, 3.33" in message
    assert "kind is not installed" not in message


def test_manifest_download_check_against_loopback() -> None:
    port = closed_port()
    problem = url_problem(f"http://127.0.0.1:{port}/v3.31.7/manifests/operator-crds.yaml", timeout=5)
    assert problem is not None and "cannot download" in problem

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert url_problem(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5) is None
    finally:
        server.shutdown()
        server.server_close()


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
- name: someone
  user: {{token: not-a-token}}
contexts:
- name: nowhere
  context: {{cluster: nowhere, user: someone}}
current-context: nowhere
"""


def test_existing_backend_without_a_reachable_api_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=closed_port()))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        existing_backend.create(Options(kubeconfig=str(kubeconfig)))
    assert time.monotonic() - started < 15
    assert str(err.value).startswith("cannot ask for the Kubernetes version: no answer from the API server at https://127.0.0.1:")
    assert "(ConnectionRefusedError: [Errno 111] Connection refused)" in str(err.value)
    assert "kubeconfig and context" in str(err.value)


def test_existing_backend_without_a_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    with pytest.raises(BackendUnavailable) as err:
        existing_backend.create(Options())
    expected = f"cannot load the default kubeconfig ($KUBECONFIG or ~/.kube/config): {tmp_path / 'none'} does not exist"
    assert expected in str(err.value)
    assert "--kubeconfig (or KUBECONFIG)" in str(err.value)


def test_option_modules_do_not_import_cluster_clients() -> None:
    # add_options runs whenever pytest starts: it must stay cheap.
    code = (
        "import sys, harness.backends.kind, harness.backends.existing\n"
        "heavy = [m for m in ('kubernetes', 'pytest_kind', 'pykube') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_calico_version_option_is_a_list(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "def test_it(pytestconfig):\n"
        "    assert pytestconfig.getoption('calico_version') == ['3.30', 'v3.31.2']\n"
        "    assert pytestconfig.getoption('cluster_name') == 'mine'\n"
    )
    result = pytester.runpytest("--calico-version", "3.30", "--calico-version", "v3.31.2", "--cluster-name", "mine")
    result.assert_outcomes(passed=1)


@pytest.mark.skipif(
    DOCKER is None or KUBECTL is None or shutil.which("false") is None, reason="needs the docker client, kubectl and false"
)
def test_a_failing_cluster_creation_leaves_nothing_behind(workdir: Path, clusters: Path) -> None:
    # `false` stands in for a kind whose every command fails: the cluster is not
    # created, its deletion fails too, and still no file of the run is left.
    from harness.backends.kind.backend import _bring_up
    from harness.core.errors import BackendError
    from harness.kube.calico import load_recipes, resolve_release
    from harness.kube.tools import DockerInfo, KindTools
    from harness.kube.versions import load_versions

    release = resolve_release(None, load_versions(clusters), load_recipes(clusters))
    info = DockerInfo("29.4.0", "1.52", "linux", "amd64", "overlayfs")
    tools = KindTools(Path(shutil.which("false") or "false"), Path(KUBECTL or "kubectl"), Path(DOCKER or "docker"), info)
    messages: list[str] = []
    with pytest.raises(
        BackendError, match=r"^`kind create cluster --name nph-test .*` failed \(creating the cluster\): exit code 1$"
    ):
        _bring_up("nph-test", False, None, "kindest/node:v1.37.0", "agnhost", release, tools, False, clusters, messages.append)
    assert list(workdir.iterdir()) == []
    assert messages[0].startswith("creating kind cluster nph-test")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDockerDaemon]:
    fake = FakeDockerDaemon(tmp_path / "docker.sock", DOCKER_29_CONTAINERD_STORE)
    monkeypatch.setenv("DOCKER_HOST", fake.host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    yield fake
    fake.close()


@pytest.mark.skipif(DOCKER is None, reason="needs the docker client")
def test_docker_29_with_the_containerd_store_is_told_apart(daemon: FakeDockerDaemon) -> None:
    info, problem = docker_daemon(Path(DOCKER or "docker"))
    assert problem is None and info is not None
    assert (info.server_version, info.api_version, info.platform, info.containerd_store) == (
        "29.4.0",
        "1.52",
        "linux/amd64",
        True,
    )
    assert info.describe() == "Docker 29.4.0 (API 1.52, linux/amd64), containerd image store"
    assert image_transfer(info) is ImageTransfer.PLATFORM_ARCHIVE


@pytest.mark.skipif(DOCKER is None, reason="needs the docker client")
def test_docker_28_with_the_classic_store_is_told_apart(daemon: FakeDockerDaemon) -> None:
    daemon.answers = DOCKER_28_CLASSIC_STORE
    info, _ = docker_daemon(Path(DOCKER or "docker"))
    assert info is not None and not info.containerd_store
    assert info.describe() == "Docker 28.0.4 (API 1.48, linux/amd64), classic image store (overlay2)"
    # The classic store keeps one platform per image: its plain docker save is enough.
    assert image_transfer(info) is ImageTransfer.ARCHIVE


@pytest.mark.skipif(DOCKER is None, reason="needs the docker client")
def test_the_single_platform_save_is_what_the_real_client_sends(daemon: FakeDockerDaemon, tmp_path: Path) -> None:
    info, _ = docker_daemon(Path(DOCKER or "docker"))
    assert info is not None
    archive = tmp_path / "probe-image.tar"
    command = save_command(Path(DOCKER or "docker"), IMAGE, archive, image_transfer(info), info.platform)
    assert command is not None
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    assert archive.read_bytes() == b"an image archive"
    (get,) = [r for r in daemon.requests if r[1].endswith("/images/get")]
    assert get[2]["names"] == [IMAGE]
    assert json.loads(get[2]["platform"][0]) == {"architecture": "amd64", "os": "linux"}


@pytest.mark.skipif(DOCKER is None, reason="needs the docker client")
def test_the_preflight_reports_the_daemon_and_how_the_image_goes_in(daemon: FakeDockerDaemon) -> None:
    info, _ = docker_daemon(Path(DOCKER or "docker"))
    assert info is not None
    tools = KindTools(Path("kind"), Path("kubectl"), Path(DOCKER or "docker"), info)
    lines = preflight_report(tools, "v1.36.4", "kindest/node:v1.37.0@sha256:00", IMAGE)
    assert lines == [
        f"Docker 29.4.0 (API 1.52, linux/amd64), containerd image store: {IMAGE} goes into the nodes as "
        "single-platform archive (docker save --platform + kind load image-archive)"
    ]
    skewed = preflight_report(tools, "v1.32.4-dispatcher", "kindest/node:v1.37.0@sha256:00", IMAGE)
    assert skewed[1].startswith("warning: kubectl v1.32.4-dispatcher is more than one minor version away")


IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"


def test_the_documented_example_stops_within_30_seconds_naming_what_is_missing(repo: Path) -> None:
    # From the repo root, as a user runs it: this machine has no kind and no Docker daemon.
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--scenario",
            "database-only-from-backend",
            "--backend",
            "kind",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert time.monotonic() - started < 30
    output = result.stdout + result.stderr
    assert "backend kind is not available: the kind backend cannot start:" in output
    assert "kind is not installed" in output or "--kind-bin" in output
    assert "Traceback" not in output
    assert result.returncode == 4  # pytest's usage error
