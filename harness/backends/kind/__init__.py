"""``--backend kind``: a kind cluster with Calico, created for the run (or reused).

This module is imported when pytest starts (for ``add_options``): it imports
neither the Kubernetes client nor pytest-kind-ng; ``create`` does, when chosen.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend, OptionSource
from harness.core.progress import Progress

#: The cluster's name when --cluster-name is not given. Several --calico-version
#: values without --calico-upgrade make one cluster per version, ``<name>-<version>``.
DEFAULT_CLUSTER_NAME = "netpol-harness"
#: pytest-kind-ng's own default for --cluster-name: pytest reports it when the option
#: is not given, so it stands for "not given" (a cluster of that name is usually
#: pytest-kind-ng's, with its own CNI).
PYTEST_KIND_DEFAULT_NAME = "pytest-kind"


def cluster_name(options: OptionSource) -> str:
    """The kind cluster to create or reuse: --cluster-name, else the harness's own name."""
    name = options.getoption("cluster_name", None)
    return DEFAULT_CLUSTER_NAME if not name or name == PYTEST_KIND_DEFAULT_NAME else str(name)


def add_options(group: Any) -> None:
    """Options of the kind backend. The cluster options (``--cluster-name``,
    ``--keep-cluster``, ``--kubeconfig``, ``--kind-image``, ``--kind-bin``,
    ``--kind-kubectl-bin``) are pytest-kind-ng's and are read, not declared, here;
    see :func:`cluster_name` for the name's default."""
    group.addoption(
        "--calico-version",
        action="append",
        default=None,
        metavar="VERSION",
        dest="calico_version",
        help="Calico release for the kind backend: a minor version with an install recipe in clusters/calico "
        "(3.32 installs the release pinned in clusters/versions.env) or a full version (v3.32.1). "
        "Default: the newest recipe. May be given several times: each scenario then runs once per "
        "version (test ids end in [calico-VERSION]) and the versions' differences are summarised.",
    )
    group.addoption(
        "--calico-upgrade",
        action="store_true",
        default=False,
        dest="calico_upgrade",
        help="with several --calico-version values, install the first, run the scenarios, upgrade the "
        "same cluster in place to the next (server-side apply, as Calico documents), run them again, "
        "and so on; instead of one new cluster per version. Give the versions oldest first: Calico "
        "cannot be downgraded in place.",
    )
    group.addoption(
        "--deny-action",
        choices=("drop", "reject"),
        default="drop",
        dest="deny_action",
        help="kind only: what Calico's Felix does with a packet no policy allows. drop (the default, as production "
        "Calico does): a blocked probe waits out --probe-timeout. reject: Felix answers with an ICMP port "
        "unreachable, so a blocked probe ends at once, and a refused probe counts as blocked. Set on clusters the "
        "harness creates (or made earlier, from drop to reject); never on --backend existing.",
    )


def create(options: OptionSource, progress: Progress | None = None) -> Backend:
    from harness.backends.kind.backend import create_kind_backend

    return create_kind_backend(options, progress)
