"""Finding the command-line tools the kind backend drives, and checking within
seconds, before anything slow starts, that they and the images are there.

Every problem found is reported at once, each with how to fix it; nothing is
downloaded (pytest-kind-ng would fetch kind and kubectl when no path is given, so
the paths found here are always passed on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import BackendUnavailable

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


def run(args: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit, capturing its output; a command that does
    not finish in time counts as failed (exit code -1)."""
    try:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
        )
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


def docker_daemon_problem(docker: Path, timeout: float = DAEMON_TIMEOUT) -> str | None:
    result = run([str(docker), "info", "--format", "{{.ServerVersion}}"], timeout)
    if result.returncode == 0 and result.stdout.strip():
        return None
    said = last_line(result.stderr) or last_line(result.stdout) or f"exit code {result.returncode}"
    return (
        f"the Docker daemon is not reachable (`docker info`: {said}). Start it (`sudo systemctl start docker`, "
        "or run `dockerd`), and make sure this user may use it (the docker group) or DOCKER_HOST points to it."
    )


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
    docker, problem = find_tool("docker", None, "a docker client", DOCKER_HOW_TO)
    if problem:
        problems.append(problem)
    elif docker is not None:
        problem = docker_daemon_problem(docker)
        if problem:
            problems.append(problem)
    if problems or kind is None or kubectl is None or docker is None:
        raise BackendUnavailable("the kind backend cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
    return KindTools(kind, kubectl, docker)


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
