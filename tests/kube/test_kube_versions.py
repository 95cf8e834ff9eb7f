"""clusters/versions.env: the one place that pins tools and images."""

from __future__ import annotations

import re

import pytest

from harness.core.errors import HarnessError
from harness.kube.calico import default_minor, resolve_release, supported_minors
from harness.kube.versions import kubernetes_version_of, parse_env_file

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def test_every_tool_and_image_is_pinned(versions):
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions.kind_version)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions.kubectl_version)
    # Images by exact tag, never a moving one.
    assert re.fullmatch(r"registry\.k8s\.io/e2e-test-images/agnhost:\d+\.\d+(\.\d+)?", versions.agnhost_image)
    for minor in versions.calico_minors():
        assert DIGEST.search(versions.node_image(minor)), versions.node_image(minor)
        assert re.fullmatch(rf"v{re.escape(minor)}\.\d+", versions.calico_version(minor))


def test_kubectl_is_within_one_minor_of_every_node_image(versions):
    def minor(version: str) -> int:
        return int(version.split(".")[1])

    for calico in versions.calico_minors():
        node = kubernetes_version_of(versions.node_image(calico))
        assert node.startswith("v1.")
        assert abs(minor(node) - minor(versions.kubectl_version)) <= 1, (calico, node)


def test_calico_3_29_runs_on_a_kubernetes_it_supports(versions):
    # Calico 3.29 is tested on Kubernetes 1.29-1.32; the newer minors on 1.33.
    assert kubernetes_version_of(versions.node_image("3.29")).startswith("v1.32.")
    assert kubernetes_version_of(versions.node_image("3.31")).startswith("v1.33.")


def test_env_file_rejects_lines_the_workflow_would_read_differently():
    assert parse_env_file("# comment\n\nA=1\nB_2=x/y:z@sha256:00\n") == {"A": "1", "B_2": "x/y:z@sha256:00"}
    for bad in ('A="1"\n', "A = 1\n", "A=1 2\n", "export A=1\n", "A=1\nA=2\n", "a=1\n"):
        with pytest.raises(HarnessError):
            parse_env_file(bad)


def test_every_pinned_minor_has_a_recipe_and_back(versions, recipes):
    assert set(versions.calico_minors()) == set(recipes)
    assert len(supported_minors(versions, recipes)) >= 2


def test_default_calico_is_the_newest_recipe(versions, recipes):
    assert default_minor(versions, recipes) == "3.31"
    release = resolve_release(None, versions, recipes)
    assert release.version == versions.calico_version("3.31")
    assert release.minor == "3.31"


@pytest.mark.parametrize(
    ("requested", "version", "minor"),
    [("3.30", "v3.30.7", "3.30"), ("v3.30", "v3.30.7", "3.30"), ("v3.31.2", "v3.31.2", "3.31"), ("3.29.1", "v3.29.1", "3.29")],
)
def test_calico_version_forms(versions, recipes, requested, version, minor):
    release = resolve_release(requested, versions, recipes)
    assert (release.version, release.minor) == (version, minor)


def test_unsupported_calico_version_names_the_supported_ones(versions, recipes):
    with pytest.raises(HarnessError) as err:
        resolve_release("3.28", versions, recipes)
    assert "3.29, 3.30, 3.31" in str(err.value)
    with pytest.raises(HarnessError, match="not a version"):
        resolve_release("latest", versions, recipes)
