"""Each Calico recipe follows its minor version's documented install and upgrade steps."""

from __future__ import annotations

import pytest

from harness.core.errors import BackendError
from harness.kube.calico import Timeouts, install_calico, resolve_release, upgrade_calico

OPERATOR_WITH_CRDS = ("tigera-operator.yaml", "custom-resources.yaml")
SEPARATE_CRDS = ("operator-crds.yaml", "tigera-operator.yaml", "custom-resources.yaml")


def test_3_29_installs_the_operator_with_its_crds_then_the_custom_resources(recipes):
    assert recipes["3.29"].install == OPERATOR_WITH_CRDS
    assert recipes["3.29"].upgrade == ("tigera-operator.yaml",)


@pytest.mark.parametrize("minor", ["3.30", "3.31"])
def test_3_30_on_install_the_crds_first(recipes, minor):
    assert recipes[minor].install == SEPARATE_CRDS
    assert recipes[minor].upgrade == ("operator-crds.yaml", "tigera-operator.yaml")


def test_image_registry_moved_to_quay_in_3_31(recipes):
    assert recipes["3.29"].images_from == "docker.io/calico"
    assert recipes["3.30"].images_from == "docker.io/calico"
    assert recipes["3.31"].images_from == "quay.io/calico"


def test_fresh_install_uses_kubectl_create_of_the_pinned_release(versions, recipes):
    release = resolve_release("3.31", versions, recipes)
    base = f"https://raw.githubusercontent.com/projectcalico/calico/{versions.calico_version('3.31')}/manifests"
    assert release.install_commands() == [
        ["create", "-f", f"{base}/operator-crds.yaml"],
        ["create", "-f", f"{base}/tigera-operator.yaml"],
        ["create", "-f", f"{base}/custom-resources.yaml"],
    ]


def test_upgrade_uses_server_side_apply_with_forced_conflicts(versions, recipes):
    release = resolve_release("3.30", versions, recipes)
    base = f"https://raw.githubusercontent.com/projectcalico/calico/{versions.calico_version('3.30')}/manifests"
    assert release.upgrade_commands() == [
        ["apply", "--server-side", "--force-conflicts", "-f", f"{base}/operator-crds.yaml"],
        ["apply", "--server-side", "--force-conflicts", "-f", f"{base}/tigera-operator.yaml"],
    ]


class ScriptedCluster:
    """A cluster whose Calico comes up after a number of polls: the install
    sequence and its waits run against it (no real cluster can run here)."""

    def __init__(self, polls_until_available: int, nodes: int = 3) -> None:
        self.commands: list[tuple[str, ...]] = []
        self.polls = 0
        self.until = polls_until_available
        self.nodes = nodes

    def kubectl(self, *args: str) -> str:
        self.commands.append(args)
        return ""

    def tigera_statuses(self) -> dict[str, bool]:
        self.polls += 1
        if self.polls < 2:
            return {}
        ready = self.polls >= self.until
        return {"calico": ready, "ippools": True, "apiserver": ready}

    def node_readiness(self) -> tuple[int, int]:
        return (self.nodes if self.polls >= self.until else 0), self.nodes

    def diagnostics(self) -> str:
        return "NAME      AVAILABLE\ncalico    False"


FAST = Timeouts(tigerastatus_created=2, calico_available=2, nodes_ready=2, poll=0.01)


def test_install_runs_the_recipe_in_order_and_waits_until_available(versions, recipes):
    release = resolve_release("3.30", versions, recipes)
    cluster = ScriptedCluster(polls_until_available=5)
    messages: list[str] = []
    install_calico(cluster, release, messages.append, FAST)
    assert [c[:1] + (c[-1].rsplit("/", 1)[1],) for c in cluster.commands] == [
        ("create", "operator-crds.yaml"),
        ("create", "tigera-operator.yaml"),
        ("create", "custom-resources.yaml"),
    ]
    assert cluster.polls >= 5
    assert any("not yet available: apiserver, calico" in m for m in messages)
    assert messages[-1] == f"Calico {release.version} is available"


def test_upgrade_applies_server_side_then_waits(versions, recipes):
    release = resolve_release("3.31", versions, recipes)
    cluster = ScriptedCluster(polls_until_available=2)
    upgrade_calico(cluster, release, lambda m: None, FAST)
    assert [c[:3] for c in cluster.commands] == [("apply", "--server-side", "--force-conflicts")] * 2


def test_a_calico_that_never_comes_up_fails_with_diagnostics(versions, recipes):
    release = resolve_release("3.29", versions, recipes)
    cluster = ScriptedCluster(polls_until_available=10**9)
    short = Timeouts(tigerastatus_created=1, calico_available=0.3, nodes_ready=0.3, poll=0.05)
    with pytest.raises(BackendError) as err:
        install_calico(cluster, release, lambda m: None, short)
    text = str(err.value)
    assert "waiting for every component to be Available: gave up after 0s" in text
    assert "not yet available: apiserver, calico" in text
    assert "calico    False" in text
