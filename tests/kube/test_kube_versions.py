"""clusters/versions.env: the one place that pins tools and images, consistent with
the recipes, and the version table of docs/kind-backend.md kept in step with both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.kube.calico import CalicoRecipe, ManifestStep, default_minor, resolve_release, supported_minors
from harness.kube.versions import PinnedVersions, kubernetes_version_of, parse_env_file

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
#: kind v0.33.0's release notes, "Images pre-built for this release".
KIND_0_33_IMAGES = {
    "v1.37.0": "sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5",
    "v1.36.4": "sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed",
    "v1.35.8": "sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0",
    "v1.34.11": "sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d",
}


def minor_of(version: str) -> str:
    match = re.match(r"v?(\d+\.\d+)", version)
    assert match, version
    return match.group(1)


def test_every_tool_and_image_is_pinned(versions: PinnedVersions) -> None:
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions.kind_version)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions.kubectl_version)
    # Images by exact tag, never a moving one.
    assert re.fullmatch(r"registry\.k8s\.io/e2e-test-images/agnhost:\d+\.\d+(\.\d+)?", versions.agnhost_image)
    for minor in versions.calico_minors():
        assert DIGEST.search(versions.node_image(minor)), versions.node_image(minor)
        assert re.fullmatch(rf"v{re.escape(minor)}\.\d+", versions.calico_version(minor))


def test_node_images_are_kind_v0_33_0s_own_by_digest(versions: PinnedVersions) -> None:
    assert versions.kind_version == "v0.33.0"
    for minor in versions.calico_minors():
        tag, digest = versions.node_image(minor).removeprefix("kindest/node:").split("@")
        assert KIND_0_33_IMAGES[tag] == digest


def test_each_calico_runs_on_the_newest_node_image_of_its_tested_kubernetes(
    versions: PinnedVersions, recipes: dict[str, CalicoRecipe]
) -> None:
    for minor, recipe in recipes.items():
        node = kubernetes_version_of(versions.node_image(minor))
        assert recipe.tests_kubernetes(minor_of(node)), (minor, node, recipe.kubernetes_tested)
        newest = max(
            (t for t in KIND_0_33_IMAGES if minor_of(t) in recipe.kubernetes_tested), key=lambda t: minor_of(t).split(".")
        )
        assert node == newest


def test_kubectl_is_within_one_minor_of_every_node_image(versions: PinnedVersions) -> None:
    kubectl = int(minor_of(versions.kubectl_version).split(".")[1])
    for calico in versions.calico_minors():
        node = kubernetes_version_of(versions.node_image(calico))
        assert abs(int(minor_of(node).split(".")[1]) - kubectl) <= 1, (calico, node)


def test_an_in_place_upgrade_stays_within_both_versions_tested_kubernetes(
    versions: PinnedVersions, recipes: dict[str, CalicoRecipe]
) -> None:
    # The upgrade jobs upgrade the first version's cluster: its node image must be one
    # the next version is tested on, and the next version's guide must upgrade from it.
    minors = supported_minors(versions, recipes)
    for old, new in zip(minors, minors[1:], strict=False):
        node = minor_of(kubernetes_version_of(versions.node_image(old)))
        assert recipes[new].tests_kubernetes(node), (old, new, node)
        assert tuple(map(int, recipes[new].upgrade_from.split("."))) <= tuple(map(int, old.split(".")))


def test_env_file_rejects_lines_the_workflow_would_read_differently() -> None:
    assert parse_env_file("# comment\n\nA=1\nB_2=x/y:z@sha256:00\n") == {"A": "1", "B_2": "x/y:z@sha256:00"}
    for bad in ('A="1"\n', "A = 1\n", "A=1 2\n", "export A=1\n", "A=1\nA=2\n", "a=1\n"):
        with pytest.raises(HarnessError):
            parse_env_file(bad)


def test_every_pinned_minor_has_a_recipe_and_back(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> None:
    assert set(versions.calico_minors()) == set(recipes) == {"3.31", "3.32", "3.33"}


def test_default_calico_is_the_newest_recipe(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> None:
    assert default_minor(versions, recipes) == "3.33"
    release = resolve_release(None, versions, recipes)
    assert (release.version, release.minor) == (versions.calico_version("3.33"), "3.33")


@pytest.mark.parametrize(
    ("requested", "version", "minor"),
    [("3.32", "v3.32.4", "3.32"), ("v3.32", "v3.32.4", "3.32"), ("v3.31.2", "v3.31.2", "3.31"), ("3.33.0", "v3.33.0", "3.33")],
)
def test_calico_version_forms(
    versions: PinnedVersions, recipes: dict[str, CalicoRecipe], requested: str, version: str, minor: str
) -> None:
    release = resolve_release(requested, versions, recipes)
    assert (release.version, release.minor) == (version, minor)


def test_unsupported_calico_version_names_the_supported_ones(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> None:
    with pytest.raises(HarnessError) as err:
        resolve_release("3.30", versions, recipes)
    assert "3.31, 3.32, 3.33" in str(err.value)
    with pytest.raises(HarnessError, match="not a version"):
        resolve_release("latest", versions, recipes)


# -- the version table of docs/kind-backend.md ---------------------------------------------------

TABLE_START = "<!-- versions: kept in step with clusters/ by tests/kube/test_kube_versions.py -->"
TABLE_END = "<!-- /versions -->"


def step_text(step: ManifestStep) -> str:
    conditions = []
    if step.kubernetes_from:
        conditions.append(f"Kubernetes ≥ {step.kubernetes_from[0]}.{step.kubernetes_from[1]}")
    if step.kubernetes_below:
        conditions.append(f"Kubernetes < {step.kubernetes_below[0]}.{step.kubernetes_below[1]}")
    if step.crd_mode:
        conditions.append(f"{step.crd_mode} CRDs")
    return f"`{step.name}`" + (f" ({', '.join(conditions)})" if conditions else "")


def version_table(versions: PinnedVersions, recipes: dict[str, CalicoRecipe]) -> str:
    rows = [
        "| Calico | release | kind node image | tested on Kubernetes | install, in order | upgrade, in order | "
        "admin policies enforced | upgrades from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for minor in supported_minors(versions, recipes):
        recipe = recipes[minor]
        policies = recipe.admin_policies
        rows.append(
            "| "
            + " | ".join(
                [
                    minor,
                    versions.calico_version(minor),
                    f"`{versions.node_image(minor).removeprefix('kindest/node:').split('@')[0]}`",
                    ", ".join(recipe.kubernetes_tested),
                    ", ".join(step_text(s) for s in recipe.install),
                    ", ".join(step_text(s) for s in recipe.upgrade),
                    f"{', '.join(policies.kinds)} (`{policies.api_version}`; CRDs in `{policies.crds_in}`)",
                    recipe.upgrade_from,
                ]
            )
            + " |"
        )
    rows += [
        "",
        f"kind {versions.kind_version} (node images pinned by digest in `clusters/versions.env`), "
        f"kubectl {versions.kubectl_version}, `{versions.agnhost_image}`.",
    ]
    return "\n".join(rows)


def test_the_docs_version_table_is_the_one_clusters_pins(
    repo: Path, versions: PinnedVersions, recipes: dict[str, CalicoRecipe]
) -> None:
    doc = (repo / "docs" / "kind-backend.md").read_text()
    assert doc.count(TABLE_START) == 1 and doc.count(TABLE_END) == 1
    written = doc.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert written == version_table(versions, recipes), "regenerate the table:\n" + version_table(versions, recipes)
