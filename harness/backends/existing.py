"""``--backend existing``: the cluster of the current kubeconfig and context.

The harness touches nothing there but what it creates: namespaces named
``nph-<run id>-<scenario namespace>``, their pods and policies, deleted at the end
of the run (see :mod:`harness.backends.cluster.existing`); with ``--sweep-leftovers``, also
the namespaces that killed runs of the harness left behind.

This module is imported when pytest starts: the Kubernetes client is imported by
``create`` only.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend, OptionSource
from harness.core.progress import Progress


def add_options(group: Any) -> None:
    """``--sweep-leftovers``. The kubeconfig is pytest-kind-ng's ``--kubeconfig``
    (else ``KUBECONFIG``, else ``~/.kube/config``), with its current context."""
    group.addoption(
        "--sweep-leftovers",
        action="store_true",
        default=False,
        dest="sweep_leftovers",
        help="with --backend existing: before the run, delete the namespaces (nph-<run id>-...) that "
        "earlier runs of the harness left on the cluster when they were killed. Off by default: on a "
        "shared cluster they may belong to runs still going.",
    )


def create(options: OptionSource, progress: Progress | None = None) -> Backend:
    from harness.backends.cluster.existing import create_existing_backend

    return create_existing_backend(options, progress)
