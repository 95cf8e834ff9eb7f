"""Finding the command-line tools the kind backend drives, and checking within
seconds, before anything slow starts, that they and the images are there.

Every problem found is reported at once, each with how to fix it; nothing is
downloaded (pytest-kind-ng would fetch kind and kubectl when no path is given, so
the paths found here are always passed on).
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import BackendUnavailable
from harness.core.spawn import run_own_session

#: Seconds for `docker info` and `docker image inspect`; a daemon that needs longer
#: is as good as absent for a test run.
DAEMON_TIMEOUT = 10.0
#: Seconds for asking a registry about an image.
REGISTRY_TIMEOUT = 20.0


@dataclass(frozen=True)
class KindTools:
    kind: Path
    kubectl: Path
    docker: Path
    docker_info: DockerInfo


def run(args: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit, capturing its output; a command that does
    not finish in time counts as failed (exit code -1)."""
    try:
        # Its own session: the terminal's Ctrl-C reaches the harness, which stops the
        # command itself (killed on KeyboardInterrupt) except during a teardown, which
        # must finish (harness.backends.shield).
        returncode, out, err = run_own_session(args, timeout, env=env)
        return subprocess.CompletedProcess(list(args), returncode, out, err)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        return subprocess.CompletedProcess(list(args), -1, out, f"no answer within {timeout:.0f}s")
    except OSError as err:
        return subprocess.CompletedProcess(list(args), -1, "", str(err))


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def find_tool(name: str, explicit: str | None, option: str, how_to_get: str) -> tuple[Path | None, str | None]:
    """(path, None) or (None, why it is missing and how to get it)."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve(), None
        return None, f"{option} {explicit}: no executable file there. {how_to_get}"
    found = shutil.which(name)
    if found:
        return Path(found), None
    if not option.startswith("--"):
        # No option names another copy (docker): PATH is the only place looked in.
        return None, f"{name} is not installed (not on PATH). {how_to_get}"
    return None, f"{name} is not installed (not on PATH, and no {option} given). {how_to_get}"


def kind_how_to(version: str) -> str:
    return (
        f"Install kind {version}: download kind-linux-amd64 from https://github.com/kubernetes-sigs/kind/releases/tag/{version} "
        f"(or run `go install sigs.k8s.io/kind@{version}`) and put it on PATH as `kind`, or pass --kind-bin PATH."
    )


def kubectl_how_to(version: str) -> str:
    return (
        f"Install kubectl {version} (https://kubernetes.io/docs/tasks/tools/, e.g. "
        f"https://dl.k8s.io/release/{version}/bin/linux/amd64/kubectl) and put it on PATH, or pass --kind-kubectl-bin PATH."
    )


DOCKER_HOW_TO = (
    "kind runs its nodes as Docker containers: install Docker Engine (https://docs.docker.com/engine/install/) "
    "so that `docker` is on PATH."
)


@dataclass(frozen=True)
class DockerInfo:
    """What ``docker version`` and ``docker info`` say about the daemon, as far as
    getting images into kind nodes depends on it."""

    server_version: str
    api_version: str
    os: str
    architecture: str
    driver: str
    driver_status: tuple[tuple[str, str], ...] = ()

    @property
    def containerd_store(self) -> bool:
        """The containerd image store: moby reports it as the storage driver status
        ``driver-type io.containerd.snapshotter.v1`` (daemon/containerd/service.go,
        LayerStoreStatus); the classic store reports its graph driver's status."""
        return ("driver-type", CONTAINERD_SNAPSHOTTER) in self.driver_status

    @property
    def platform(self) -> str:
        """The daemon's platform, ``linux/amd64``: the platform of the kind nodes,
        which must be the host's (kind release notes)."""
        return f"{self.os}/{self.architecture}"

    def api_at_least(self, version: tuple[int, int]) -> bool:
        try:
            have = tuple(int(part) for part in self.api_version.split(".")[:2])
        except ValueError:
            return False
        return have >= version

    def describe(self) -> str:
        store = "containerd image store" if self.containerd_store else f"classic image store ({self.driver or 'unknown driver'})"
        return f"Docker {self.server_version} (API {self.api_version}, {self.platform}), {store}"


#: The storage driver status of Docker's containerd image store.
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"
#: ``docker image save --platform`` needs API 1.48 (Docker 28.0; docs.docker.com,
#: docker image save reference).
SAVE_PLATFORM_API = (1, 48)


def _docker_json(docker: Path, args: Sequence[str], timeout: float) -> tuple[object, str]:
    """The JSON that ``docker <args> --format '{{json .}}'`` prints, or (None, why not)."""
    result = run([str(docker), *args, "--format", "{{json .}}"], timeout)
    if result.returncode != 0:
        return None, last_line(result.stderr) or last_line(result.stdout) or f"exit code {result.returncode}"
    try:
        return json.loads(result.stdout), ""
    except ValueError:
        return None, f"not JSON: {last_line(result.stdout)[:200]}"


def parse_docker_info(version: object, info: object) -> DockerInfo | None:
    """A DockerInfo from ``docker version``'s ``.Server`` and ``docker info``, None
    when either is not what the docker client prints."""
    if not isinstance(version, dict) or not isinstance(info, dict):
        return None
    status = info.get("DriverStatus") or []
    pairs = (
        tuple((str(item[0]), str(item[1])) for item in status if isinstance(item, list | tuple) and len(item) == 2)
        if isinstance(status, list)
        else ()
    )
    return DockerInfo(
        server_version=str(version.get("Version") or info.get("ServerVersion") or "?"),
        api_version=str(version.get("ApiVersion") or version.get("APIVersion") or "?"),
        os=str(version.get("Os") or info.get("OSType") or "linux"),
        architecture=str(version.get("Arch") or "?"),
        driver=str(info.get("Driver") or ""),
        driver_status=pairs,
    )


def docker_daemon(docker: Path, timeout: float = DAEMON_TIMEOUT) -> tuple[DockerInfo | None, str | None]:
    """(what the daemon says about itself, None) or (None, why it cannot be used)."""
    info, problem = _docker_json(docker, ["info"], timeout)
    if info is not None and isinstance(info, dict) and info.get("ServerVersion"):
        server, problem = _docker_json(docker, ["version"], timeout)
        found = parse_docker_info(server.get("Server") if isinstance(server, dict) else None, info)
        if found is not None:
            return found, None
    return None, (
        f"the Docker daemon is not reachable (`docker info`: {problem or 'no server version'}). Start it "
        "(`sudo systemctl start docker`, or run `dockerd`), and make sure this user may use it (the docker group) "
        "or DOCKER_HOST points to it."
    )


def docker_daemon_problem(docker: Path, timeout: float = DAEMON_TIMEOUT) -> str | None:
    return docker_daemon(docker, timeout)[1]


class ImageTransfer(enum.Enum):
    """How the probe image gets into the kind nodes.

    ``kind load docker-image`` saves with plain ``docker save`` and imports with
    ``ctr images import --all-platforms`` (kind pkg/cluster/nodeutils/util.go). With
    Docker's containerd image store, the archive of a pulled multi-platform image
    names every platform but holds only the host's layers, and the import fails with
    ``ctr: content digest sha256:...: not found`` (kubernetes-sigs/kind#3795). So it
    is never used: the archive is made for one platform."""

    #: The containerd store: ``docker image save --platform <host>`` (API 1.48+) +
    #: ``kind load image-archive``.
    PLATFORM_ARCHIVE = "single-platform archive (docker save --platform + kind load image-archive)"
    #: The classic store keeps one platform per image, so its plain ``docker save`` is
    #: already single-platform (what kind load docker-image does there, and works):
    #: ``docker image save`` + ``kind load image-archive``.
    ARCHIVE = "archive of the one platform the classic image store keeps (docker save + kind load image-archive)"
    #: The containerd store with a daemon older than API 1.48: no single-platform
    #: archive can be made, so the nodes pull the image (``imagePullPolicy: IfNotPresent``).
    NODES_PULL = "nothing loaded: the nodes pull the image from its registry"


def image_transfer(info: DockerInfo) -> ImageTransfer:
    if not info.containerd_store:
        return ImageTransfer.ARCHIVE
    if info.api_at_least(SAVE_PLATFORM_API):
        return ImageTransfer.PLATFORM_ARCHIVE
    return ImageTransfer.NODES_PULL


def save_command(docker: Path, image: str, archive: Path, transfer: ImageTransfer, platform: str) -> list[str] | None:
    """The ``docker save`` that makes the archive to load, None when nothing is loaded."""
    if transfer is ImageTransfer.PLATFORM_ARCHIVE:
        return [str(docker), "image", "save", "--platform", platform, "--output", str(archive), image]
    if transfer is ImageTransfer.ARCHIVE:
        return [str(docker), "image", "save", "--output", str(archive), image]
    return None


def check_kind_tools(kind_bin: str | None, kubectl_bin: str | None, kind_version: str, kubectl_version: str) -> KindTools:
    """kind, kubectl, the docker client and a running Docker daemon, or
    BackendUnavailable naming everything that is missing."""
    problems = []
    kind, problem = find_tool("kind", kind_bin, "--kind-bin", kind_how_to(kind_version))
    if problem:
        problems.append(problem)
    kubectl, problem = find_tool("kubectl", kubectl_bin, "--kind-kubectl-bin", kubectl_how_to(kubectl_version))
    if problem:
        problems.append(problem)
    docker, problem = find_tool("docker", None, "", DOCKER_HOW_TO)
    info: DockerInfo | None = None
    if problem:
        problems.append(problem)
    elif docker is not None:
        info, problem = docker_daemon(docker)
        if problem:
            problems.append(problem)
    if problems or kind is None or kubectl is None or docker is None or info is None:
        raise BackendUnavailable("the kind backend cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
    return KindTools(kind, kubectl, docker, info)


def kubectl_client_version(kubectl: Path, timeout: float = DAEMON_TIMEOUT) -> str | None:
    """``clientVersion.gitVersion`` of ``kubectl version --client -o json``, None when
    kubectl does not say."""
    result = run([str(kubectl), "version", "--client", "-o", "json"], timeout)
    try:
        decoded = json.loads(result.stdout) if result.returncode == 0 else None
    except ValueError:
        return None
    client = decoded.get("clientVersion") if isinstance(decoded, dict) else None
    version = client.get("gitVersion") if isinstance(client, dict) else None
    return str(version) if version else None


def image_is_local(docker: Path, image: str) -> bool:
    return run([str(docker), "image", "inspect", "--format", "{{.Id}}", image], DAEMON_TIMEOUT).returncode == 0


def image_problem(docker: Path, image: str, timeout: float = REGISTRY_TIMEOUT) -> str | None:
    """None when ``image`` is in the local Docker or its registry knows it."""
    if image_is_local(docker, image):
        return None
    result = run([str(docker), "manifest", "inspect", image], timeout)
    if result.returncode == 0:
        return None
    said = last_line(result.stderr) or last_line(result.stdout) or f"exit code {result.returncode}"
    return (
        f"cannot pull {image} (`docker manifest inspect`: {said}). Pull it where its registry is reachable "
        f"(`docker pull {image}`), or `docker load` a saved copy, so that it is in the local Docker."
    )


def check_images(docker: Path, images: Sequence[str], timeout: float = REGISTRY_TIMEOUT) -> None:
    problems = [p for p in (image_problem(docker, image, timeout) for image in images) if p]
    if problems:
        raise BackendUnavailable("the kind backend cannot start:\n" + "\n".join(f"  - {p}" for p in problems))


def url_problem(url: str, timeout: float = REGISTRY_TIMEOUT) -> str | None:
    """None when ``url`` answers a HEAD request with success."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - an https URL from versions.env
            return None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"cannot download {url} ({reason}); the Calico manifests are fetched from there during the install"
