"""The ``kind`` commands the kind backend runs, each with a time limit.

pytest-kind-ng's ``KindCluster`` runs kind without any (its ``create`` even loops
until the cluster exists), so the harness runs kind itself and reads only
pytest-kind-ng's options. A command that overruns its limit is killed and reported
with the command's last words; Ctrl-C kills it too (harness.core.spawn) and the
caller's cleanup deletes what was half made, with Ctrl-C held until it is done
(harness.backends.shield).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import BackendError, BackendUnavailable
from harness.kube.tools import last_line, run

#: Seconds for ``kind create cluster`` (node image present: about a minute; pulling
#: it first takes longer).
CREATE_TIMEOUT = 900.0
#: Seconds for ``kind delete cluster``.
DELETE_TIMEOUT = 300.0
#: Seconds for loading an image archive into every node.
LOAD_TIMEOUT = 600.0
#: Seconds for the quick queries (clusters, nodes, kubeconfig, version).
QUERY_TIMEOUT = 60.0


def context_name(cluster: str) -> str:
    """The kubeconfig context kind writes for a cluster (kind
    pkg/cluster/internal/kubeconfig: ``"kind-" + clusterName``)."""
    return f"kind-{cluster}"


@dataclass(frozen=True)
class KindCli:
    kind: Path

    def _run(self, args: list[str], timeout: float, what: str, unavailable: bool = False) -> str:
        result = run([str(self.kind), *args], timeout)
        if result.returncode != 0:
            said = last_line(result.stderr) or last_line(result.stdout) or f"exit code {result.returncode}"
            error = BackendUnavailable if unavailable else BackendError
            raise error(f"`kind {' '.join(args)}` failed ({what}): {said}")
        return result.stdout

    def version(self) -> str:
        match = re.search(r"v\d+\.\d+\.\d+\S*", self._run(["version"], QUERY_TIMEOUT, "version", unavailable=True))
        return match.group(0) if match else "unknown"

    def clusters(self) -> list[str]:
        return self._run(["get", "clusters"], QUERY_TIMEOUT, "listing clusters", unavailable=True).split()

    def nodes(self, cluster: str) -> list[str]:
        return self._run(["get", "nodes", "--name", cluster], QUERY_TIMEOUT, "listing nodes").split()

    def kubeconfig(self, cluster: str) -> str:
        return self._run(["get", "kubeconfig", "--name", cluster], QUERY_TIMEOUT, "reading its kubeconfig", unavailable=True)

    def create(self, cluster: str, config: Path, image: str, kubeconfig: Path) -> None:
        # --wait 0s: with the default CNI disabled the nodes cannot be Ready before
        # Calico runs; the harness waits for them after installing it.
        self._run(
            [
                "create",
                "cluster",
                "--name",
                cluster,
                "--config",
                str(config),
                "--image",
                image,
                "--kubeconfig",
                str(kubeconfig),
                "--wait",
                "0s",
            ],
            CREATE_TIMEOUT,
            "creating the cluster",
        )

    def delete(self, cluster: str, kubeconfig: Path) -> None:
        self._run(["delete", "cluster", "--name", cluster, "--kubeconfig", str(kubeconfig)], DELETE_TIMEOUT, "deleting it")

    def load_archive(self, cluster: str, archive: Path) -> None:
        self._run(["load", "image-archive", str(archive), "--name", cluster], LOAD_TIMEOUT, "loading the image archive")


@dataclass(frozen=True)
class ClusterAccess:
    """The one way to reach a kind cluster: its kubeconfig file and the context kind
    wrote into it. The Python client and every kubectl call use both, so they always
    talk to the same cluster, whatever the file's current context is."""

    kubeconfig: Path
    context: str

    @classmethod
    def of(cls, cluster: str, kubeconfig: Path) -> ClusterAccess:
        return cls(kubeconfig, context_name(cluster))

    def kubectl(self, kubectl: Path, *args: str) -> list[str]:
        return [str(kubectl), "--kubeconfig", str(self.kubeconfig), "--context", self.context, *args]
