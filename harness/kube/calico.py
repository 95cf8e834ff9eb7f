"""Calico on a kind cluster with the Tigera operator, one recipe per minor version.

A recipe (``clusters/calico/<minor>/recipe.yaml``) is what that version's own
documentation says, with the page it says it on: the manifests of its kind
quickstart, in order, the manifests of its operator upgrade guide, the Kubernetes
versions it is tested against, and which admin-policy kinds it enforces. The patch
release of each minor version is pinned in ``clusters/versions.env``.

Manifests are applied with ``kubectl apply --server-side --force-conflicts``, for a
fresh install as for an upgrade. The quickstarts use ``kubectl create``, which fails
with AlreadyExists on a cluster that a killed run left half-installed; server-side
apply is what the upgrade guides use for the same files (the CRD manifests are too
large for client-side apply) and repairs such a cluster instead.

Available is awaited for real. Right after a new operator is applied, every
TigeraStatus still says what the old operator wrote (Available), and the operator's
status code keeps Available true while an upgrade may be occurring
(tigera/operator pkg/controller/status/status.go). So the wait is over only when
``installations.operator.tigera.io/default`` reports ``status.calicoVersion`` equal to
the target release, which the core controller writes only after the status manager
reports the installation available (pkg/controller/installation/core_controller.go),
and every TigeraStatus is Available and neither Progressing nor Degraded.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import yaml

from harness.core.errors import HarnessError
from harness.core.progress import Progress
from harness.kube.resources import FELIX_CONFIGURATION
from harness.kube.versions import PinnedVersions, minor_key
from harness.kube.views import FelixConfigurationView, InstallationView, TigeraStatusView
from harness.kube.waiting import wait_until

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")
_MINOR = re.compile(r"^(\d+)\.(\d+)$")
#: Where the recipes live under the clusters directory.
RECIPE_FILE = "recipe.yaml"
#: CRD modes of Calico's own resources: v1 (crd.projectcalico.org, served through the
#: aggregation API server) and v3 (native projectcalico.org CRDs, 3.32 on).
CRD_MODES = ("v1", "v3")
#: A CRD that exists in v1 mode only (tigera/operator pkg/apis/version.go: "If the v1
#: CRDs are present ... use v1").
V1_MODE_CRD = "felixconfigurations.crd.projectcalico.org"


class RecipeError(HarnessError):
    """A recipe file that is not what the harness expects: file, field, expected."""

    def __init__(self, source: str, field_path: str, expected: str) -> None:
        super().__init__(f"{source}: {field_path}: expected {expected}")


def parse_minor(text: str) -> tuple[int, int]:
    match = _MINOR.fullmatch(text.strip().lstrip("v"))
    if match is None:
        raise ValueError(text)
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class ManifestStep:
    """One manifest to apply, possibly only on some clusters: on a Kubernetes minor
    from ``kubernetes_from`` on, below ``kubernetes_below``, or whose Calico CRDs are
    in ``crd_mode``."""

    name: str
    kubernetes_from: tuple[int, int] | None = None
    kubernetes_below: tuple[int, int] | None = None
    crd_mode: str | None = None

    def applies(self, kubernetes: tuple[int, int] | None, crd_mode: str | None) -> bool:
        if self.kubernetes_from is not None and (kubernetes is None or kubernetes < self.kubernetes_from):
            return False
        if self.kubernetes_below is not None and (kubernetes is None or kubernetes >= self.kubernetes_below):
            return False
        return self.crd_mode is None or self.crd_mode == crd_mode


#: The peer forms of the network-policy-api (the field a peer sets).
PEER_FORMS = ("namespaces", "pods", "networks", "nodes", "domainNames")


@dataclass(frozen=True)
class AdminPolicySupport:
    """The cluster-scoped admin policies a Calico version enforces: their API version
    and kinds, the manifest of that version that carries their CRDs, whether the
    operator installs those CRDs itself (``-manage-crds=true`` in tigera-operator.yaml),
    the peer forms Calico converts into rules (``peers``; Calico's converter fails a
    rule with any other closed) and whether it converts named ports."""

    api_version: str
    kinds: tuple[str, ...]
    crds_in: str
    operator_installs_crds: bool
    source: str
    peers: tuple[str, ...] = ("namespaces", "pods", "networks")
    named_ports: bool = True


@dataclass(frozen=True)
class CalicoRecipe:
    minor: str
    install: tuple[ManifestStep, ...]
    upgrade: tuple[ManifestStep, ...]
    images_from: str
    kubernetes_tested: tuple[str, ...]
    upgrade_from: str
    admin_policies: AdminPolicySupport
    sources: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    def tests_kubernetes(self, kubernetes_minor: str) -> bool:
        return kubernetes_minor in self.kubernetes_tested

    def manifests(self) -> set[str]:
        return {step.name for step in (*self.install, *self.upgrade)}


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

    def install_commands(self, kubernetes: tuple[int, int] | None) -> list[list[str]]:
        """kubectl arguments that install this release on a cluster of that Kubernetes
        minor, in order."""
        return [self._apply(step) for step in self.recipe.install if step.applies(kubernetes, None)]

    def upgrade_commands(self, kubernetes: tuple[int, int] | None, crd_mode: str) -> list[list[str]]:
        """kubectl arguments that upgrade a running Calico (whose CRDs are in
        ``crd_mode``, which an upgrade keeps) to this release, in order."""
        return [self._apply(step) for step in self.recipe.upgrade if step.applies(kubernetes, crd_mode)]

    def _apply(self, step: ManifestStep) -> list[str]:
        return ["apply", "--server-side", "--force-conflicts", "-f", self.manifest_url(step.name)]


# -- reading the recipes ------------------------------------------------------------


def _steps(raw: object, source: str, where: str) -> tuple[ManifestStep, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError(source, where, "a non-empty list of manifest file names")
    steps = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            steps.append(ManifestStep(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("manifest"), str):
            raise RecipeError(source, at, "a file name, or {manifest: NAME, kubernetes_from/kubernetes_below/crd_mode: ...}")
        unknown = set(item) - {"manifest", "kubernetes_from", "kubernetes_below", "crd_mode"}
        if unknown:
            raise RecipeError(source, f"{at}.{sorted(unknown)[0]}", "only manifest, kubernetes_from, kubernetes_below, crd_mode")
        bounds: dict[str, tuple[int, int] | None] = {}
        for key in ("kubernetes_from", "kubernetes_below"):
            value = item.get(key)
            try:
                bounds[key] = parse_minor(str(value)) if value is not None else None
            except ValueError:
                raise RecipeError(source, f"{at}.{key}", 'a Kubernetes minor version such as "1.36"') from None
        mode = item.get("crd_mode")
        if mode is not None and mode not in CRD_MODES:
            raise RecipeError(source, f"{at}.crd_mode", " or ".join(CRD_MODES))
        steps.append(ManifestStep(item["manifest"], bounds["kubernetes_from"], bounds["kubernetes_below"], mode))
    return tuple(steps)


def _text(raw: Mapping[str, object], key: str, source: str, where: str = "") -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(source, f"{where}{key}", "a non-empty string")
    return value


def _admin_policies(raw: object, source: str, manifests: set[str]) -> AdminPolicySupport:
    where = "admin_policies."
    if not isinstance(raw, dict):
        raise RecipeError(
            source,
            "admin_policies",
            "an object with api_version, kinds, crds_in, operator_installs_crds, peers, named_ports, source",
        )
    kinds = raw.get("kinds")
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise RecipeError(source, f"{where}kinds", "a non-empty list of kinds")
    crds_in = _text(raw, "crds_in", source, where)
    if crds_in not in manifests:
        raise RecipeError(source, f"{where}crds_in", f"one of the recipe's manifests ({', '.join(sorted(manifests))})")
    operator = raw.get("operator_installs_crds")
    if not isinstance(operator, bool):
        raise RecipeError(source, f"{where}operator_installs_crds", "true or false")
    peers = raw.get("peers")
    if not isinstance(peers, list) or not peers or not all(p in PEER_FORMS for p in peers):
        raise RecipeError(
            source, f"{where}peers", f"a non-empty list of the peer forms Calico converts ({', '.join(PEER_FORMS)})"
        )
    named_ports = raw.get("named_ports")
    if not isinstance(named_ports, bool):
        raise RecipeError(source, f"{where}named_ports", "true or false: whether Calico converts named ports")
    return AdminPolicySupport(
        _text(raw, "api_version", source, where),
        tuple(kinds),
        crds_in,
        operator,
        _text(raw, "source", source, where),
        tuple(peers),
        named_ports,
    )


def load_recipe(path: Path) -> CalicoRecipe:
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise HarnessError(f"{source}: cannot read the Calico recipe ({err})") from None
    if not isinstance(raw, dict):
        raise RecipeError(source, "(top level)", "a mapping")
    minor = str(raw.get("minor", ""))
    if minor != path.parent.name or _MINOR.fullmatch(minor) is None:
        raise RecipeError(source, "minor", f"the directory's name, {path.parent.name!r}, quoted")
    install = _steps(raw.get("install"), source, "install")
    upgrade = _steps(raw.get("upgrade"), source, "upgrade")
    tested = raw.get("kubernetes_tested")
    if not isinstance(tested, list) or not tested or not all(isinstance(t, str) and _MINOR.fullmatch(t) for t in tested):
        raise RecipeError(source, "kubernetes_tested", 'a list of Kubernetes minor versions such as ["1.35", "1.36"]')
    sources = raw.get("sources")
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v for v in sources.values()):
        raise RecipeError(source, "sources", "a mapping of what (install, upgrade, kubernetes...) to the page that says it")
    for needed in ("install", "upgrade", "kubernetes"):
        if needed not in sources:
            raise RecipeError(source, f"sources.{needed}", "the page this part of the recipe follows")
    upgrade_from = _text(raw, "upgrade_from", source)
    if _MINOR.fullmatch(upgrade_from) is None:
        raise RecipeError(source, "upgrade_from", 'the oldest minor version the upgrade guide upgrades from, such as "3.31"')
    names = {s.name for s in (*install, *upgrade)}
    return CalicoRecipe(
        minor=minor,
        install=install,
        upgrade=upgrade,
        images_from=_text(raw, "images_from", source),
        kubernetes_tested=tuple(tested),
        upgrade_from=upgrade_from,
        admin_policies=_admin_policies(raw.get("admin_policies"), source, names),
        sources={str(k): str(v) for k, v in sources.items()},
        source=source,
    )


def load_recipes(directory: Path) -> dict[str, CalicoRecipe]:
    """Recipes by minor version, from ``<directory>/calico/<minor>/recipe.yaml``."""
    recipes: dict[str, CalicoRecipe] = {}
    for path in sorted((directory / "calico").glob(f"*/{RECIPE_FILE}")):
        recipe = load_recipe(path)
        recipes[recipe.minor] = recipe
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
    """``--calico-version``: ``3.32`` (the pinned patch release), ``v3.32.1`` (that
    release, installed with the 3.32 recipe) or None (the newest recipe)."""
    supported = supported_minors(versions, recipes)
    text = (requested or default_minor(versions, recipes)).strip()
    match = _VERSION.match(text)
    if match is None:
        raise HarnessError(f"--calico-version {text!r} is not a version such as 3.32 or v3.32.1")
    major, minor_part, patch = match.groups()
    minor = f"{major}.{minor_part}"
    if minor not in supported:
        raise HarnessError(
            f"--calico-version {text}: no install recipe for Calico {minor}; supported: {', '.join(supported)} "
            "(add clusters/calico/<minor>/recipe.yaml and CALICO_<major>_<minor> in clusters/versions.env for another)"
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

    def tigera_statuses(self) -> list[TigeraStatusView]: ...

    def installation(self) -> InstallationView | None: ...

    def node_readiness(self) -> tuple[int, int]:
        """(nodes Ready, nodes)."""
        ...

    def crd_mode(self) -> str:
        """``v1`` or ``v3``: which CRDs Calico's resources use on this cluster."""
        ...

    def diagnostics(self) -> str:
        """What to show when a wait times out (statuses, pods)."""
        ...


def install_calico(
    target: CalicoTarget,
    release: CalicoRelease,
    progress: Progress,
    kubernetes: tuple[int, int] | None,
    timeouts: Timeouts | None = None,
) -> None:
    """Install ``release`` on a cluster without a CNI (or repair a half-installed
    one) and wait until it is available."""
    for args in release.install_commands(kubernetes):
        progress(f"Calico {release.version}: kubectl {' '.join(args)}")
        target.kubectl(*args)
    wait_until_available(target, release, progress, timeouts or Timeouts())


def upgrade_calico(
    target: CalicoTarget,
    release: CalicoRelease,
    progress: Progress,
    kubernetes: tuple[int, int] | None,
    timeouts: Timeouts | None = None,
) -> None:
    """Upgrade the Calico of a cluster to ``release`` and wait until it runs it."""
    for args in release.upgrade_commands(kubernetes, target.crd_mode()):
        progress(f"Calico upgrade to {release.version}: kubectl {' '.join(args)}")
        target.kubectl(*args)
    wait_until_available(target, release, progress, timeouts or Timeouts())


def calico_state(
    installation: InstallationView | None, statuses: list[TigeraStatusView], release: CalicoRelease
) -> tuple[bool, str]:
    """Whether the cluster runs ``release``, settled, and what is still missing."""
    missing = []
    running = installation.calico_version if installation is not None else ""
    if running != release.version:
        missing.append(f"installations.operator.tigera.io/default reports calicoVersion {running or '(none yet)'}")
    if not any(s.name == "calico" for s in statuses):
        missing.append("no tigerastatus/calico yet")
    missing += [s.describe() for s in sorted(statuses, key=lambda s: s.name) if not s.settled]
    return not missing, "; ".join(missing)


def wait_until_available(target: CalicoTarget, release: CalicoRelease, progress: Progress, timeouts: Timeouts) -> None:
    """tigerastatus/calico exists; the Installation reports ``release`` and every
    TigeraStatus is Available, not Progressing, not Degraded; every node is Ready."""
    what = f"Calico {release.version}"
    wait_until(
        lambda: (any(s.name == "calico" for s in target.tigera_statuses()), "not created yet"),
        limit=timeouts.tigerastatus_created,
        poll=timeouts.poll,
        progress=progress,
        message=f"{what}: waiting for the operator to create tigerastatus/calico",
        diagnostics=target.diagnostics,
    )

    def running() -> tuple[bool, str]:
        statuses = target.tigera_statuses()
        return calico_state(target.installation(), statuses, release)

    wait_until(
        running,
        limit=timeouts.calico_available,
        poll=timeouts.poll,
        progress=progress,
        message=f"{what}: waiting for the operator to report it running, every component Available and settled",
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


# -- how Felix denies ----------------------------------------------------------------


class DenyAction(enum.Enum):
    """What Felix does with a packet no policy allows: ``FelixConfiguration``
    ``iptablesFilterDenyAction`` / ``nftablesFilterDenyAction`` (one for each
    dataplane, read by felix/config/config_params.go ``FilterDenyAction()``; DROP by
    default). The rule renderer uses it for every deny: a Deny rule, the end-of-tier
    drop that isolates a pod selected by a Kubernetes NetworkPolicy (converted into
    the default tier), the drop when no profile matches (felix/rules/policy.go,
    endpoints.go, rule_defs.go). REJECT is ``--jump REJECT`` (iptables) or ``reject``
    (nftables) without ``--reject-with``: an ICMP port unreachable, which a TCP or UDP
    client sees at once as a refused connection. Felix restarts itself to apply a
    change (felix/daemon/daemon.go: a changed parameter that is not one of those
    applied live)."""

    DROP = "drop"
    REJECT = "reject"

    @property
    def felix_value(self) -> str:
        """As the FelixConfiguration field takes it (``^(?i)(Drop|Reject)?$``)."""
        return self.value.capitalize()


def deny_action_of(config: FelixConfigurationView | None) -> DenyAction:
    """The deny action a FelixConfiguration sets: REJECT if either dataplane's field
    says so (the harness sets both), else DROP."""
    if config is None:
        return DenyAction.DROP
    given = {config.iptables_deny_action.lower(), config.nftables_deny_action.lower()}
    return DenyAction.REJECT if "reject" in given else DenyAction.DROP


def deny_action_manifest(action: DenyAction, name: str = "default") -> dict[str, object]:
    """The FelixConfiguration fields the harness owns (server-side apply: nothing
    else of the object changes)."""
    return {
        "apiVersion": FELIX_CONFIGURATION.api_version,
        "kind": FELIX_CONFIGURATION.kind,
        "metadata": {"name": name},
        "spec": {"iptablesFilterDenyAction": action.felix_value, "nftablesFilterDenyAction": action.felix_value},
    }
