"""Calico on a kind cluster with the tigera operator, one recipe per minor version.

The recipes in ``clusters/calico/<minor>.yaml`` list the manifests each minor
version's documentation installs, in order: ``kubectl create`` for a fresh
cluster (the CRD manifests are too large for client-side apply) and
``kubectl apply --server-side --force-conflicts`` for an upgrade, as Calico's
upgrade guide prescribes. The patch release of each minor version is pinned in
``clusters/versions.env``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from harness.core.errors import HarnessError
from harness.core.progress import Progress
from harness.kube.versions import PinnedVersions, minor_key
from harness.kube.waiting import wait_until

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


@dataclass(frozen=True)
class CalicoRecipe:
    minor: str
    install: tuple[str, ...]
    upgrade: tuple[str, ...]
    images_from: str
    source: str


@dataclass(frozen=True)
class CalicoRelease:
    """One Calico release and how to install it."""

    version: str
    recipe: CalicoRecipe
    manifests_url: str

    @property
    def minor(self) -> str:
        return self.recipe.minor

    def manifest_url(self, name: str) -> str:
        return f"{self.manifests_url}/{self.version}/manifests/{name}"

    def install_commands(self) -> list[list[str]]:
        """kubectl arguments for a fresh install, in order."""
        return [["create", "-f", self.manifest_url(name)] for name in self.recipe.install]

    def upgrade_commands(self) -> list[list[str]]:
        """kubectl arguments that upgrade a running Calico to this release, in order."""
        return [["apply", "--server-side", "--force-conflicts", "-f", self.manifest_url(name)] for name in self.recipe.upgrade]


def load_recipes(directory: Path) -> dict[str, CalicoRecipe]:
    """Recipes by minor version, from ``<directory>/calico/*.yaml``."""
    recipes: dict[str, CalicoRecipe] = {}
    for path in sorted((directory / "calico").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            minor = str(raw["minor"])
            recipe = CalicoRecipe(
                minor=minor,
                install=tuple(str(x) for x in raw["install"]),
                upgrade=tuple(str(x) for x in raw["upgrade"]),
                images_from=str(raw["images_from"]),
                source=str(path),
            )
        except (KeyError, TypeError) as err:
            raise HarnessError(f"{path}: not a Calico recipe ({err!r}); it needs minor, install, upgrade, images_from") from None
        if path.stem != minor or not recipe.install:
            raise HarnessError(f"{path}: minor {minor!r} must match the file name and install must list manifests")
        recipes[minor] = recipe
    return recipes


def supported_minors(versions: PinnedVersions, recipes: Mapping[str, CalicoRecipe]) -> list[str]:
    """Minor versions with both a recipe and a pinned release, oldest first."""
    return sorted(set(recipes) & set(versions.calico_minors()), key=minor_key)


def default_minor(versions: PinnedVersions, recipes: Mapping[str, CalicoRecipe]) -> str:
    minors = supported_minors(versions, recipes)
    if not minors:
        raise HarnessError("clusters/ has no Calico version with both a recipe and a pinned release")
    return minors[-1]


def resolve_release(requested: str | None, versions: PinnedVersions, recipes: Mapping[str, CalicoRecipe]) -> CalicoRelease:
    """``--calico-version``: ``3.30`` (the pinned patch release), ``v3.30.4`` (that
    release, installed with the 3.30 recipe) or None (the newest recipe)."""
    supported = supported_minors(versions, recipes)
    text = (requested or default_minor(versions, recipes)).strip()
    match = _VERSION.match(text)
    if match is None:
        raise HarnessError(f"--calico-version {text!r} is not a version such as 3.31 or v3.31.2")
    major, minor_part, patch = match.groups()
    minor = f"{major}.{minor_part}"
    if minor not in supported:
        raise HarnessError(
            f"--calico-version {text}: no install recipe for Calico {minor}; supported: {', '.join(supported)} "
            "(add clusters/calico/<minor>.yaml and CALICO_<major>_<minor> in clusters/versions.env for another)"
        )
    version = f"v{minor}.{patch}" if patch is not None else versions.calico_version(minor)
    return CalicoRelease(version, recipes[minor], versions.calico_manifests_url)


# -- installing and waiting ---------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each wait. Calico's own kind CI allows 600 s for
    calico-node; first installs are dominated by image pulls."""

    tigerastatus_created: float = 300.0
    calico_available: float = 900.0
    nodes_ready: float = 300.0
    poll: float = 5.0


class CalicoTarget(Protocol):
    """What installing Calico needs from a cluster."""

    def kubectl(self, *args: str) -> str: ...

    def tigera_statuses(self) -> dict[str, bool]:
        """TigeraStatus name → its Available condition is True."""
        ...

    def node_readiness(self) -> tuple[int, int]:
        """(nodes Ready, nodes)."""
        ...

    def diagnostics(self) -> str:
        """What to show when a wait times out (statuses, pods)."""
        ...


def install_calico(target: CalicoTarget, release: CalicoRelease, progress: Progress, timeouts: Timeouts | None = None) -> None:
    """Install ``release`` on a cluster without a CNI and wait until it is available."""
    for args in release.install_commands():
        progress(f"Calico {release.version}: kubectl {' '.join(args)}")
        target.kubectl(*args)
    wait_until_available(target, release, progress, timeouts or Timeouts())


def upgrade_calico(target: CalicoTarget, release: CalicoRelease, progress: Progress, timeouts: Timeouts | None = None) -> None:
    """Upgrade the Calico of a cluster to ``release`` and wait until it is available."""
    for args in release.upgrade_commands():
        progress(f"Calico upgrade to {release.version}: kubectl {' '.join(args)}")
        target.kubectl(*args)
    wait_until_available(target, release, progress, timeouts or Timeouts())


def wait_until_available(target: CalicoTarget, release: CalicoRelease, progress: Progress, timeouts: Timeouts) -> None:
    """The tigerastatus ``calico`` exists, every tigerastatus is Available, every node is Ready."""
    what = f"Calico {release.version}"
    wait_until(
        lambda: ("calico" in target.tigera_statuses(), "not created yet"),
        limit=timeouts.tigerastatus_created,
        poll=timeouts.poll,
        progress=progress,
        message=f"{what}: waiting for the operator to create tigerastatus/calico",
        diagnostics=target.diagnostics,
    )

    def available() -> tuple[bool, str]:
        statuses = target.tigera_statuses()
        pending = sorted(name for name, ok in statuses.items() if not ok)
        return (not pending and "calico" in statuses), f"not yet available: {', '.join(pending) or 'calico'}"

    wait_until(
        available,
        limit=timeouts.calico_available,
        poll=timeouts.poll,
        progress=progress,
        message=f"{what}: waiting for every component to be Available",
        diagnostics=target.diagnostics,
    )

    def nodes() -> tuple[bool, str]:
        ready, total = target.node_readiness()
        return (total > 0 and ready == total), f"{ready}/{total} nodes Ready"

    wait_until(
        nodes,
        limit=timeouts.nodes_ready,
        poll=timeouts.poll,
        progress=progress,
        message=f"{what}: waiting for every node to be Ready",
        diagnostics=target.diagnostics,
    )
    progress(f"{what} is available")
