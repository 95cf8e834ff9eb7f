"""The plugin's command-line options and ini settings, in pytest's style, with
values checked where they are read so that a bad one says where it came from."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.backends import BACKENDS, DEFAULT_BACKEND, available_backend_modules
from harness.core.files import display_path

#: pytest's option group for every netpol-harness option (``--help``).
OPTION_GROUP = ("netpol", "NetworkPolicy scenarios (netpol-harness)")


def positive_seconds(text: str) -> float:
    """argparse type of a duration: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 1 or 0.5)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds above 0")
    return value


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(*OPTION_GROUP)
    group.addoption(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        dest="netpol_scenario",
        help="run only scenarios whose name matches NAME, a glob pattern such as 'default-deny*'. "
        "May be given several times. Without a path argument, scenarios are collected from "
        "the netpol_scenarios directories.",
    )
    group.addoption(
        "--backend",
        choices=sorted(BACKENDS),
        default=None,
        dest="netpol_backend",
        help="where scenarios run: kind (a new kind cluster with Calico), existing (the cluster "
        "of the current kubeconfig), emulated (network namespaces and nftables on this host, "
        "as root), model (the reference model, no network). Default: the netpol_backend ini "
        f"value, else {DEFAULT_BACKEND}.",
    )
    group.addoption(
        "--probe-timeout",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        dest="probe_timeout",
        help="how long one probe waits for a connection or reply; a blocked probe takes this long. Default: 1.",
    )
    group.addoption(
        "--probe-deadline",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        dest="probe_deadline",
        help="on kind and existing clusters, how long cells that differ from the expectation are "
        "re-probed after a change while the CNI programs it; then the whole matrix is probed once "
        "more. The emulated and model backends answer at once. Default: 10.",
    )
    group.addoption(
        "--strict-unsupported",
        action="store_true",
        default=False,
        dest="netpol_strict_unsupported",
        help="fail a scenario that has cells the backend cannot probe (SCTP on the emulated backend), "
        "instead of passing it with those cells counted as unsupported (or skipping it when every cell is).",
    )
    group.addoption(
        "--record-baseline",
        metavar="DIR",
        default=None,
        dest="netpol_record_baseline",
        help="write every scenario's observed matrices to DIR/<scenario>.json, with the backend, CNI and "
        "Kubernetes versions, the harness version, the date and the scenario file's hash.",
    )
    group.addoption(
        "--baseline",
        metavar="DIR",
        default=None,
        dest="netpol_baseline",
        help="compare every scenario's observed matrices with the baseline in DIR and fail the scenario on "
        "any changed cell (also when the baseline is missing or was recorded for another version of the "
        "scenario file or in another baseline format). May name the same DIR as --record-baseline to "
        "compare first and then record.",
    )
    group.addoption(
        "--report-dir",
        metavar="DIR",
        default=None,
        dest="netpol_report_dir",
        help="write DIR/<scenario>.json and DIR/<scenario>.md per scenario and DIR/index.html, a "
        "self-contained page with coloured matrices, the policies and the reproduce commands.",
    )
    group.addoption(
        "--netpol-base",
        metavar="REF",
        default=None,
        dest="netpol_base",
        help="also report, for every scenario, the cells its change since the git revision REF opens and "
        "closes (the scenario and its policy files as they are at REF, read with git; the reference model "
        "computes both sides, and on a probing backend the observations confirm them).",
    )
    group.addoption(
        "--fail-on-opened",
        action="store_true",
        default=False,
        dest="netpol_fail_on_opened",
        help="with --netpol-base, fail a scenario whose change opens a path that none of its expectations "
        "declares allowed (declare an intended opening with an expect rule in the same change).",
    )
    group.addoption(
        "--netpol-constraints",
        metavar="PATH",
        default=None,
        dest="netpol_constraints",
        help="check every step of every scenario against the constraints in PATH (docs/constraints.md): "
        "a violated constraint fails the scenario, and one that applies to no step of any scenario of the "
        "run fails the run. Default: the netpol_constraints ini value.",
    )
    group.addoption(
        "--update-expectations",
        action="store_true",
        default=False,
        dest="netpol_update_expectations",
        help="rewrite the expectations of the scenarios run with what was observed (rules and matrices; comments "
        "and key order kept), so that the diff of the scenario files is the review. Scenarios marked xfail are left alone.",
    )
    parser.addini(
        "netpol_scenarios",
        type="paths",
        default=["scenarios"],
        help="directories holding scenario files, searched recursively (YAML files that are not "
        "scenarios, such as policy manifests, are left alone). Default: scenarios.",
    )
    parser.addini("netpol_backend", default="", help="default backend when --backend is not given.")
    parser.addini(
        "netpol_constraints",
        type="paths",
        default=[],
        help="a constraints file (relative to the ini file) every scenario of the run is checked against, "
        "when --netpol-constraints is not given.",
    )
    for module in available_backend_modules():
        add = getattr(module, "add_options", None)
        if add is not None:
            add(group)


def check_ini(config: pytest.Config) -> None:
    """Ini values are not checked by argparse: check them with the file they came from."""
    backend_ini = config.getini("netpol_backend")
    if backend_ini and backend_ini not in BACKENDS:
        raise pytest.UsageError(
            f"{config.inipath or 'ini file'}: netpol_backend = {backend_ini!r} is not a backend; "
            f"use one of {', '.join(sorted(BACKENDS))}"
        )


def scenario_dirs(config: pytest.Config) -> list[Path]:
    return [Path(p).resolve() for p in config.getini("netpol_scenarios")]


def constraints_file(config: pytest.Config) -> tuple[Path, str] | None:
    """The constraints file of the run and where it was named (the option or the ini
    file, for messages), or None."""
    option = config.getoption("netpol_constraints", None)
    if option:
        # Relative to where pytest was started, as a path on the command line is.
        return Path(config.invocation_params.dir) / option, f"--netpol-constraints {option}"
    paths = config.getini("netpol_constraints")
    if not paths:
        return None
    where = f"{config.inipath or 'ini file'}: netpol_constraints"
    if len(paths) > 1:
        raise pytest.UsageError(f"{where} names {len(paths)} files; give one constraints file")
    return Path(paths[0]), f"{where} = {display_path(Path(paths[0]))}"
