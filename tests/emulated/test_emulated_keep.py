"""``--keep-network``: the emulated network and its servers outlive the session, the
reproduce commands run after it, and ``harness.backends.emulated.cleanup`` (what
``python -m harness cleanup`` calls) removes them. Also the capability check.
Needs root and the emulated backend's tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness
from harness.backends import emulated
from harness.backends.emulated import (
    NETWORK_GONE_NOTE,
    cleanup,
    cleanup_leftovers,
    kept_notice,
    missing_capabilities,
    missing_requirements,
)
from harness.backends.emulated.leftovers import kept_networks
from harness.backends.emulated.names import RunId

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

REPO = Path(harness.__file__).resolve().parent.parent

SESSION = textwrap.dedent("""\
    import json
    from harness.backends import emulated
    from harness.backends.base import Options
    from harness.core.matrix import Cell
    from harness.core.settings import ImplementationSettings
    from harness.core.topology import NamespaceSpec, PodSpec, PortProtocol, PortSpec, Protocol, Topology

    topology = lambda pod: Topology(
        namespaces=(NamespaceSpec("x"),),
        pods=(PodSpec("x", "a", {}, (PortSpec(80),)), PodSpec("x", pod, {}, (PortSpec(80), PortSpec(80, Protocol.UDP)))),
    )
    backend = emulated.create(Options(keep_network=True))
    commands = []
    for pod in ("b", "c"):  # two scenarios: each keeps its own network
        t = topology(pod)
        backend.deploy(t, ImplementationSettings())
        for protocol in (Protocol.TCP, Protocol.UDP):
            commands.append(backend.reproduce_command(Cell("x/a", "x/" + pod, PortProtocol(80, protocol))))
    backend.close()
    print(json.dumps({"kept": [run.name for run in backend.kept], "commands": commands,
                      "notice": emulated.kept_notice([run.name for run in backend.kept])}))
""")


def netns_of(run: str) -> list[str]:
    return sorted(p.name for p in Path("/run/netns").iterdir() if p.name.startswith(run + "-"))


def test_a_kept_network_serves_after_the_session_until_cleanup() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SESSION],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    kept = session["kept"]
    try:
        assert len(kept) == 2 and all(len(netns_of(run)) == 3 for run in kept)
        assert session["notice"] == (
            f"kept the emulated networks {kept[0]}, {kept[1]} and their servers: the reproduce commands run as root; "
            "remove them with `sudo python -m harness cleanup`"
        )
        # The session is over; its commands still run, against servers still there.
        for command, expected in zip(session["commands"], ["x/b", "x/b", "x/c", "x/c"], strict=True):
            answer = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
            assert (answer.returncode, answer.stdout) == (0, expected), command
        # The sweep every new backend makes leaves kept networks alone ...
        cleanup_leftovers()
        assert all(len(netns_of(run)) == 3 for run in kept)
        assert set(kept) <= {run.name for run in kept_networks()}
    finally:
        # ... and the cleanup command removes them, servers and records too.
        removed = cleanup()
    assert all(netns_of(run) == [] for run in kept)
    assert len([name for name in removed if any(name.startswith(run) for run in kept)]) == 6
    for run in kept:
        assert not RunId.parse(run).state_file.exists()  # type: ignore[union-attr]
    for command in session["commands"][:1]:
        gone = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
        assert gone.returncode != 0


FAILING = textwrap.dedent("""\
    description: the intent says allowed, the policy denies
    namespaces: {x: {pods: {a: {ports: [80/TCP]}, b: {ports: [80/TCP]}}}}
    policies:
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-b, namespace: x}
        spec: {podSelector: {}, policyTypes: [Ingress]}
    expect: {default: allowed}
""")


def run_failing(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "wrong.yaml").write_text(FAILING)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "wrong.yaml", "--backend", "emulated", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_failure_says_whether_its_reproduce_commands_can_still_run(tmp_path: Path) -> None:
    gone = run_failing(tmp_path)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert f"note: {NETWORK_GONE_NOTE}" in gone.stdout
    assert "kept the emulated network" not in gone.stdout

    kept = run_failing(tmp_path, "--keep-network")
    try:
        assert kept.returncode == 1, kept.stdout + kept.stderr
        assert "note: the emulated network is kept after the session (--keep-network)" in kept.stdout
        notice = next(line for line in kept.stdout.splitlines() if line.startswith("netpol-harness: kept the emulated network"))
        assert notice.endswith(
            "and its servers: the reproduce commands run as root; remove it with `sudo python -m harness cleanup`"
        )
        # The reproduce line of a wrong cell, pasted after the session: the kept network
        # still drops it (curl times out, exit 28).
        command = next(line.split("reproduce: ", 1)[1] for line in kept.stdout.splitlines() if "reproduce: ip netns exec" in line)
        pasted = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=20)
        assert pasted.returncode == 28, pasted.stderr
    finally:
        cleaned = subprocess.run(
            [sys.executable, "-m", "harness", "cleanup"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert cleaned.returncode == 0, cleaned.stderr
    assert kept_networks() == []


def test_the_notices_read_correctly_for_one_and_several_networks() -> None:
    assert kept_notice([]) == ""
    assert kept_notice(["nph-1-abcd", "nph-1-ef01"]) == (
        "kept the emulated networks nph-1-abcd, nph-1-ef01 and their servers: the reproduce commands run as root; "
        "remove them with `sudo python -m harness cleanup`"
    )


def test_capabilities_are_read_from_the_effective_set() -> None:
    # /proc/self/status lines as the kernel writes them (proc(5)): root with every
    # capability, and root in a container without NET_ADMIN and SYS_ADMIN.
    assert missing_capabilities("Name:\tpython\nCapEff:\t000001ffffffffff\n") == []
    assert missing_capabilities("CapEff:\t00000000a80425fb\n") == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert missing_capabilities("CapEff:\t0000000000001000\n") == ["CAP_SYS_ADMIN"]


def test_root_without_net_admin_is_told_once_by_create() -> None:
    script = textwrap.dedent("""\
        from harness.backends import emulated
        from harness.backends.base import Options
        from harness.core.errors import BackendUnavailable
        try:
            emulated.create(Options())
        except BackendUnavailable as err:
            print(err)
    """)
    done = subprocess.run(
        ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert os.geteuid() == 0
    assert done.stdout.strip() == (
        "the emulated backend needs: the capabilities CAP_NET_ADMIN (this process runs as root without them; in a "
        "container add them, e.g. docker run --cap-add NET_ADMIN --cap-add SYS_ADMIN)"
    ), done.stderr


def test_the_option_is_registered() -> None:
    class Group:
        def __init__(self) -> None:
            self.options: dict[str, dict[str, object]] = {}

        def addoption(self, name: str, **kwargs: object) -> None:
            self.options[name] = kwargs

    group = Group()
    emulated.add_options(group)
    assert group.options["--keep-network"]["action"] == "store_true"
    assert group.options["--keep-network"]["dest"] == "keep_network"
