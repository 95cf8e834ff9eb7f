"""A first scenario written from a team's manifests (``python -m harness init``).

The scenario takes its topology from the manifests (``workloads:``), applies the
policies found (files given with ``--policies``, and NetworkPolicies among the
manifests, inline), and expects what the reference model computes (``expect:
{model: true}``), so that it passes on the model backend as printed; the matrix the
model computes follows as comments, which is what the team's policies actually do,
to turn into rules or a matrix of their intent. When the manifests have Services, the
cluster DNS pod is declared and names are probed too, so DNS pitfalls show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import ScenarioError
from harness.core.services import DNS_LABEL, DNS_NAMESPACE
from harness.scenario.loader import parse_scenario
from harness.scenario.sources import FileSource
from harness.scenario.workloads import manifest_files, read_manifests
from harness.scenario.yamlload import load_all

_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _relative(target: Path, scenario_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), scenario_dir.resolve())).as_posix()


def _policy_files(paths: Sequence[Path], source: FileSource) -> tuple[list[Path], list[str]]:
    """Files holding NetworkPolicies only (which ``policies:`` can name), and notes
    on the files left out."""
    files: list[Path] = []
    notes: list[str] = []
    for target in paths:
        for file in manifest_files(target, source, str(target), "--policies"):
            docs = [d for d in load_all(source.read_text(file), source.display(file)) if d is not None]
            kinds = {d.get("kind") if isinstance(d, dict) else None for d in docs}
            if kinds == {"NetworkPolicy"}:
                files.append(file)
            elif docs:
                notes.append(f"{source.display(file)} holds other kinds than NetworkPolicy; list its policies by hand")
    return files, notes


def _inline_policies(paths: Sequence[Path], source: FileSource) -> list[dict[str, Any]]:
    """NetworkPolicy manifests found among the workload manifests."""
    found: list[dict[str, Any]] = []
    for target in paths:
        for file in manifest_files(target, source, str(target), "manifests"):
            for doc in load_all(source.read_text(file), source.display(file)):
                if isinstance(doc, dict) and doc.get("kind") == "NetworkPolicy":
                    found.append(doc)
    return found


def starter_scenario(
    manifests: Sequence[Path],
    policies: Sequence[Path],
    scenario_dir: Path,
    source: FileSource,
    name: str | None = None,
) -> str:
    """The text of a scenario for ``manifests`` and ``policies``, with paths written
    relative to ``scenario_dir`` (where the scenario file is to be saved)."""
    workloads = read_manifests(manifests, source)
    if not workloads.pods:
        raise ScenarioError(", ".join(map(str, manifests)), "", "no workload in these manifests", "Deployments, Pods, ...")
    title = name or _NAME.sub("-", Path(manifests[0]).resolve().name).strip("-") or "my-app"
    policy_files, notes = _policy_files(policies, source)
    inline = _inline_policies(manifests, source)
    doc: dict[str, Any] = {
        "name": title,
        "description": f"What the policies of {title} allow, as the reference model computes it (python -m harness init).",
        "tags": ["generated"],
        "workloads": [{"path": _relative(Path(p), scenario_dir)} for p in manifests],
    }
    dns = bool(workloads.services) and not any(p.namespace == DNS_NAMESPACE for p in workloads.pods)
    if dns:
        doc["namespaces"] = {
            DNS_NAMESPACE: {"pods": {"coredns": {"labels": {DNS_LABEL[0]: DNS_LABEL[1]}, "ports": ["53/UDP", "53/TCP"]}}}
        }
        doc["settings"] = {"probe_names": True}
    entries: list[Any] = [{"path": _relative(f, scenario_dir)} for f in policy_files]
    entries += inline
    doc["policies"] = entries
    doc["expect"] = {"model": True}
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=110)
    scenario = parse_scenario(yaml.safe_load(text), scenario_dir / f"{title}.yaml")
    header = [
        f"# A first scenario for {title}, written by python -m harness init.",
        "# It expects what the reference model computes, so it passes on the model backend",
        "# as it is; the matrix the model computes is below. Write your intent as rules or",
        "# as a matrix (docs/scenario-format.md) and run it on a network backend.",
    ]
    if dns:
        header.append("# kube-system/coredns stands for the cluster DNS: names resolve through it.")
    header += [f"# note: {n}" for n in (*workloads.notes, *notes)]
    model = scenario.plans[0].model
    lines = ["", "# The reference model's matrix (. allowed, X blocked, N name not resolved, P partial,", "# R refused):"]
    lines += [f"#   {line}" if line else "#" for line in model.render().splitlines()]
    return "\n".join(header) + "\n" + text + "\n".join(lines) + "\n"
