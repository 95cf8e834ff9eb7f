"""``--backend existing``: the cluster of the current kubeconfig and context.

The harness touches nothing there but what it creates: namespaces named
``nph-<run id>-<scenario namespace>``, their pods and policies, deleted at the end
of the run (see :mod:`harness.kube.existing`).

This module is imported when pytest starts: the Kubernetes client is imported by
``create`` only.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend, OptionSource
from harness.kube.progress import Progress


def add_options(group: Any) -> None:
    """No options of its own: the kubeconfig is pytest-kind-ng's ``--kubeconfig``
    (else ``KUBECONFIG``, else ``~/.kube/config``), with its current context."""


def create(options: OptionSource, progress: Progress | None = None) -> Backend:
    from harness.kube.existing import create_existing_backend

    return create_existing_backend(options, progress)
