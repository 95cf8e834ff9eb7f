"""Baselines and reports with real packets: the emulated backend (root, Linux)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.reporting.conftest import Project

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "nc", "curl", "ip")),
        reason="the emulated backend needs root and nft, nc, curl, ip",
    ),
]

# The emulated backend says which chain decided each cell (docs/emulated-backend.md).
WEB_TO_API = (
    "shop/web → shop/api:8080/TCP baseline allowed, observed blocked "
    "(dropped: ingress of shop/api isolated by shop/api-from-web, no rule allows it)"
)
CLIENT_TO_API = (
    "tools/client → shop/api:8080/TCP baseline blocked, observed allowed "
    "(egress of tools/client not isolated; ingress of shop/api admitted by shop/api-from-web ingress[0])"
)


def _run(project: Project, *args: str) -> pytest.RunResult:
    return project.pytester.runpytest_subprocess(
        "--backend", "emulated", "-p", "no:cacheprovider", "--probe-timeout", "1", *args, "scenarios"
    )


def test_a_changed_policy_fails_against_the_baseline_naming_the_cells(project: Project) -> None:
    project.shop_from_file()
    _run(project, "--record-baseline", "bl", "--report-dir", "before").assert_outcomes(passed=1)
    recorded = json.loads((project.path / "bl" / "shop-from-file.json").read_text())
    assert recorded["recorded"]["backend"]["backend"] == "emulated"

    project.shop_from_file(project.TOOLS_PEER)
    result = _run(project, "--baseline", "bl", "--report-dir", "after")
    result.assert_outcomes(failed=1)
    report = result.stdout.str().split("short test summary info")[0]
    changed = [line for line in report.splitlines() if " baseline " in line and " observed " in line]
    assert changed == [WEB_TO_API, CLIENT_TO_API]
    # The HTML report marks exactly those two cells as changed since the baseline.
    html = (project.path / "after" / "index.html").read_text()
    assert html.count(' changed" title=') == 2
