"""Each Calico recipe follows its minor version's documented install and upgrade
steps, and the wait after them ends only once the operator says the target release
runs and every component is settled.

The operator's objects come from recorded/calico-upgrade-3.31-to-3.32.yaml: the
Installation and TigeraStatus objects, poll after poll, as the Tigera operator's
status code writes them during an upgrade (derived from tigera/operator's source,
which that file names; no cluster runs here). The cluster itself is a script that
hands them out and records the kubectl calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.core.errors import BackendError, HarnessError
from harness.kube.calico import (
    CalicoRecipe,
    CalicoRelease,
    RecipeError,
    Timeouts,
    calico_state,
    install_calico,
    load_recipe,
    resolve_release,
    upgrade_calico,
)
from harness.kube.versions import PinnedVersions
from harness.kube.views import InstallationView, TigeraStatusView, installation_view, tigera_status_view

STATES = yaml.safe_load((Path(__file__).parent / "recorded" / "calico-upgrade-3.31-to-3.32.yaml").read_text())
BASE = "https://raw.githubusercontent.com/projectcalico/calico"
SSA = ["apply", "--server-side", "--force-conflicts", "-f"]


def manifests(commands: list[list[str]]) -> list[str]:
    assert all(c[:4] == SSA for c in commands), commands
    return [c[4].rsplit("/", 1)[1] for c in commands]


def test_3_31_installs_and_upgrades_with_operator_crds(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> None:
    release = resolve_release("3.31", versions, recipes)
    assert manifests(release.install_commands((1, 35))) == ["operator-crds.yaml", "tigera-operator.yaml", "custom-resources.yaml"]
    assert manifests(release.upgrade_commands((1, 35), "v1")) == ["operator-crds.yaml", "tigera-operator.yaml"]
    assert release.install_commands((1, 35))[0][4] == f"{BASE}/{versions.calico_version('3.31')}/manifests/operator-crds.yaml"


def test_3_32_moved_its_crds_to_v1_crd_projectcalico_org(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> None:
    release = resolve_release("3.32", versions, recipes)
    assert manifests(release.install_commands((1, 36))) == [
        "v1_crd_projectcalico_org.yaml",
        "tigera-operator.yaml",
        "custom-resources.yaml",
    ]
    assert manifests(release.upgrade_commands((1, 36), "v1")) == ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]


def test_3_33_installs_v3_crds_by_kubernetes_version_and_upgrades_keep_the_crd_mode(
    versions: PinnedVersions, recipes: dict[str, CalicoRecipe]
) -> None:
    release = resolve_release("3.33", versions, recipes)
    assert manifests(release.install_commands((1, 37))) == [
        "v3_projectcalico_org.yaml",
        "tigera-operator.yaml",
        "custom-resources.yaml",
    ]
    assert manifests(release.install_commands((1, 35)))[0] == "v3_projectcalico_org-v1beta1.yaml"
    # A cluster installed with 3.31 or 3.32 has v1 CRDs, and keeps them.
    assert manifests(release.upgrade_commands((1, 36), "v1")) == ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]
    assert manifests(release.upgrade_commands((1, 37), "v3")) == ["v3_projectcalico_org.yaml", "tigera-operator.yaml"]
    assert manifests(release.upgrade_commands((1, 35), "v3")) == ["v3_projectcalico_org-v1beta1.yaml", "tigera-operator.yaml"]


def test_which_admin_policies_each_version_enforces(recipes: dict[str, CalicoRecipe]) -> None:
    old, new, newest = (recipes[m].admin_policies for m in ("3.31", "3.32", "3.33"))
    assert (old.api_version, old.kinds, old.crds_in) == (
        "policy.networking.k8s.io/v1alpha1",
        ("AdminNetworkPolicy", "BaselineAdminNetworkPolicy"),
        "operator-crds.yaml",
    )
    for later in (new, newest):
        assert (later.api_version, later.kinds, later.crds_in) == (
            "policy.networking.k8s.io/v1alpha2",
            ("ClusterNetworkPolicy",),
            "v1_crd_projectcalico_org.yaml",
        )
    # What Calico's converters make of them: the same peers in every version; named
    # ports only from 3.32 (3.31 reads a namedPort as no port at all).
    assert all(p.peers == ("namespaces", "pods", "networks") for p in (old, new, newest))
    assert (old.named_ports, new.named_ports, newest.named_ports) == (False, True, True)
    # Installed with Calico: by a manifest the recipe applies, and by the operator itself.
    assert all(p.operator_installs_crds for p in (old, new, newest))
    assert old.crds_in in {s.name for s in recipes["3.31"].install}
    assert new.crds_in in {s.name for s in recipes["3.32"].install}


def test_every_recipe_names_its_sources(recipes: dict[str, CalicoRecipe]) -> None:
    for minor, recipe in recipes.items():
        assert recipe.sources["install"].startswith(f"tigera/docs calico_versioned_docs/version-{minor}/")
        assert recipe.sources["upgrade"].startswith(f"tigera/docs calico_versioned_docs/version-{minor}/operations/upgrading/")
        assert recipe.sources["kubernetes"].startswith(f"tigera/docs calico_versioned_docs/version-{minor}/")
        assert recipe.images_from == "quay.io/calico"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('minor: "3.40"\n', "minor: expected the directory's name, '3.32', quoted"),
        ('minor: "3.32"\ninstall: []\n', "install: expected a non-empty list of manifest file names"),
        (
            'minor: "3.32"\ninstall: [{manifest: a.yaml, kubernetes_from: soon}]\n',
            "install[0].kubernetes_from: expected a Kubernetes",
        ),
        ('minor: "3.32"\ninstall: [{manifest: a.yaml, crd_mode: v2}]\n', "install[0].crd_mode: expected v1 or v3"),
        ('minor: "3.32"\ninstall: [{manifest: a.yaml, when: x}]\n', "install[0].when: expected only manifest"),
    ],
)
def test_a_broken_recipe_names_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "calico" / "3.32" / "recipe.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("peers", ["namespaces", "everything"], "admin_policies.peers: expected a non-empty list of the peer forms"),
        ("named_ports", "sometimes", "admin_policies.named_ports: expected true or false"),
    ],
)
def test_a_recipe_must_say_what_calico_converts(clusters: Path, tmp_path: Path, field: str, value: object, message: str) -> None:
    raw: dict[str, Any] = yaml.safe_load((clusters / "calico" / "3.31" / "recipe.yaml").read_text())
    raw["admin_policies"][field] = value
    path = tmp_path / "calico" / "3.31" / "recipe.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_a_recipe_whose_admin_policy_crds_are_not_installed_is_refused(clusters: Path, tmp_path: Path) -> None:
    raw: dict[str, Any] = yaml.safe_load((clusters / "calico" / "3.32" / "recipe.yaml").read_text())
    raw["admin_policies"]["crds_in"] = "somewhere-else.yaml"
    path = tmp_path / "calico" / "3.32" / "recipe.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError, match="admin_policies.crds_in: expected one of the recipe's manifests"):
        load_recipe(path)


class OperatorStates:
    """A cluster whose Tigera operator goes through ``states`` one poll at a time
    (and stays at the last), recording every kubectl call. A poll is one read of the
    TigeraStatus list; the Installation read after it is of the same state."""

    def __init__(self, states: list[dict[str, Any]], crd_mode: str = "v1", nodes: int = 3) -> None:
        self.states = states
        self.index = -1
        self.commands: list[tuple[str, ...]] = []
        self.mode = crd_mode
        self.nodes = nodes

    def kubectl(self, *args: str) -> str:
        self.commands.append(args)
        return ""

    def _state(self) -> dict[str, Any]:
        return self.states[max(0, min(self.index, len(self.states) - 1))]

    def tigera_statuses(self) -> list[TigeraStatusView]:
        self.index += 1
        return [tigera_status_view(raw) for raw in self._state()["tigerastatuses"]]

    def installation(self) -> InstallationView | None:
        return installation_view(self._state()["installation"])

    def node_readiness(self) -> tuple[int, int]:
        return self.nodes, self.nodes

    def crd_mode(self) -> str:
        return self.mode

    def diagnostics(self) -> str:
        return "NAME     AVAILABLE   PROGRESSING   DEGRADED\ngoldmane False       False         True"


FAST = Timeouts(tigerastatus_created=2, calico_available=2, nodes_ready=2, poll=0.01)


def release_of(version: str, recipe: CalicoRecipe) -> CalicoRelease:
    return CalicoRelease(version, recipe, BASE)


def test_the_upgrade_wait_reads_calico_version_and_waits_for_every_component_to_settle(recipes: dict[str, CalicoRecipe]) -> None:
    # The first poll is the wait for tigerastatus/calico to exist; every state then
    # comes to the wait for the release.
    target = OperatorStates([STATES["states"][0], *STATES["states"]])
    messages: list[str] = []
    upgrade_calico(target, release_of("v3.32.4", recipes["3.32"]), messages.append, (1, 35), FAST)
    assert [c[-1].rsplit("/", 1)[1] for c in target.commands] == ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]
    # The wait went through all five states; only the last one ends it.
    assert target.index == len(STATES["states"])
    progress = "\n".join(messages)
    assert "reports calicoVersion v3.31.7" in progress
    assert 'calico: Progressing (DaemonSet "calico-system/calico-node" update is rolling out (1 out of 3 updated))' in progress
    assert 'apiserver: Progressing (Deployment "calico-system/calico-apiserver" is not available' in progress
    assert messages[-1] == "Calico v3.32.4 is available"


def test_right_after_the_new_operator_is_applied_every_status_still_says_available(recipes: dict[str, CalicoRecipe]) -> None:
    # The state a wait for "every TigeraStatus Available" would accept: the old operator's.
    first = STATES["states"][0]
    statuses = [tigera_status_view(raw) for raw in first["tigerastatuses"]]
    assert all(s.available for s in statuses)
    done, missing = calico_state(installation_view(first["installation"]), statuses, release_of("v3.32.4", recipes["3.32"]))
    assert not done
    assert missing == "installations.operator.tigera.io/default reports calicoVersion v3.31.7"
    # The release is reported before every component has settled: still not done.
    fourth = STATES["states"][3]
    done, missing = calico_state(
        installation_view(fourth["installation"]),
        [tigera_status_view(raw) for raw in fourth["tigerastatuses"]],
        release_of("v3.32.4", recipes["3.32"]),
    )
    assert not done and missing.startswith("apiserver: Progressing")


def test_a_component_that_stays_degraded_fails_the_upgrade_with_diagnostics(recipes: dict[str, CalicoRecipe]) -> None:
    target = OperatorStates([STATES["degraded_after_upgrade"]])
    short = Timeouts(tigerastatus_created=1, calico_available=0.3, nodes_ready=0.3, poll=0.05)
    with pytest.raises(BackendError) as err:
        upgrade_calico(target, release_of("v3.32.4", recipes["3.32"]), lambda m: None, (1, 35), short)
    text = str(err.value)
    assert "waiting for the operator to report it running, every component Available and settled: gave up after 0s" in text
    assert "goldmane: Degraded (Pod calico-system/goldmane-5d9c7b8f4-x2k8q has crash looping container: goldmane)" in text
    assert "goldmane False       False         True" in text


def test_a_fresh_install_applies_the_recipe_server_side_in_order_and_waits(recipes: dict[str, CalicoRecipe]) -> None:
    settled = STATES["states"][-1]
    target = OperatorStates([{**settled, "tigerastatuses": []}, settled])
    install_calico(target, release_of("v3.32.4", recipes["3.32"]), lambda m: None, (1, 36), FAST)
    assert [c[:3] for c in target.commands] == [("apply", "--server-side", "--force-conflicts")] * 3
    assert [c[-1].rsplit("/", 1)[1] for c in target.commands] == [
        "v1_crd_projectcalico_org.yaml",
        "tigera-operator.yaml",
        "custom-resources.yaml",
    ]


def test_installing_again_over_a_half_installed_cluster_is_the_same_install(recipes: dict[str, CalicoRecipe]) -> None:
    # kubectl create would stop at the first object a killed run left (AlreadyExists);
    # server-side apply of the same manifests completes the install.
    release = release_of("v3.32.4", recipes["3.32"])
    assert release.install_commands((1, 36)) == release.install_commands((1, 36))
    assert all("create" not in command for command in release.install_commands((1, 36)))


def test_unsupported_calico_version_names_the_supported_ones(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> None:
    with pytest.raises(HarnessError, match="no install recipe for Calico 3.29; supported: 3.31, 3.32, 3.33"):
        resolve_release("3.29", versions, recipes)
