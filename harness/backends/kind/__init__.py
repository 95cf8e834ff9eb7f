"""``--backend kind``: a kind cluster with Calico, created for the run (or reused).

This module is imported when pytest starts (for ``add_options``): it imports
neither the Kubernetes client nor pytest-kind-ng; ``create`` does, when chosen.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend, OptionSource
from harness.kube.progress import Progress


def add_options(group: Any) -> None:
    """Options of the kind backend. The cluster options (``--cluster-name``,
    ``--keep-cluster``, ``--kubeconfig``, ``--kind-image``, ``--kind-bin``,
    ``--kind-kubectl-bin``) are pytest-kind-ng's and are read, not declared, here."""
    group.addoption(
        "--calico-version",
        action="append",
        default=None,
        metavar="VERSION",
        dest="calico_version",
        help="Calico release for the kind backend: a minor version with an install recipe in clusters/calico "
        "(3.30 installs the release pinned in clusters/versions.env) or a full version (v3.30.4). "
        "Default: the newest recipe. May be given several times; the first one is installed.",
    )


def create(options: OptionSource, progress: Progress | None = None) -> Backend:
    from harness.backends.kind.backend import create_kind_backend

    return create_kind_backend(options, progress)
