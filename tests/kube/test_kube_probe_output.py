"""The probe script's output, as recorded from a real run, read back into
observations; the exec command and the reproduce lines.

recorded/probe-round.txt is the stdout of probe.sh run by dash 0.5.12 with curl 7.88.1
and OpenBSD netcat 1.219 (Debian), against the servers of test_kube_probe_script.py
(ROUND there says what each one does), in a network namespace of this machine."""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.core.matrix import Outcome
from harness.core.topology import Protocol
from harness.kube.probe_script import (
    ProbeResult,
    ProbeTarget,
    kubectl_line,
    observation,
    parse_output,
    reproduce_command,
    round_timeout,
    script_command,
)

RECORDED = (Path(__file__).parent / "recorded" / "probe-round.txt").read_text()
PROTOCOLS = {i: Protocol.TCP for i in (0, 1, 2, 3, 4, 8)} | {5: Protocol.UDP, 6: Protocol.UDP, 7: Protocol.UDP, 9: Protocol.SCTP}


def test_recorded_lines_parse_into_the_clients_output() -> None:
    lines, problems = parse_output(RECORDED)
    assert problems == []
    assert sorted(lines) == list(range(10))
    assert [lines[i].exit_code for i in range(10)] == [0, 7, 28, 0, 28, 0, 0, 0, 7, 127]
    assert lines[0].stdout == b"x/a" and lines[3].stdout == b"y/b" and lines[5].stdout == b"x/a"
    assert lines[2].elapsed == 1.03
    assert b"* Connected to 127.0.0.1" in lines[4].stderr  # accepted, then silent
    assert lines[6].stdout == b"" and lines[6].elapsed_ms == 1020  # UDP: no answer in the wait


def test_outcomes_of_recorded_lines() -> None:
    lines, _ = parse_output(RECORDED)

    def seen(i: int, identity: str = "x/a") -> tuple[Outcome, str]:
        found = observation(lines[i], PROTOCOLS[i], identity, 1.0, "cmd")
        assert found.command == "cmd"
        return found.outcome, found.detail

    assert seen(0) == (Outcome.ALLOWED, "")
    assert seen(1) == (Outcome.REFUSED, "connection refused")
    assert seen(2) == (Outcome.BLOCKED, "timeout")
    assert seen(3) == (Outcome.WRONG_RESPONDER, "answered by 'y/b', expected 'x/a'")
    assert seen(3, identity="y/b") == (Outcome.ALLOWED, "")
    assert seen(4) == (Outcome.WRONG_RESPONDER, "connected, nothing answered")
    assert seen(5) == (Outcome.ALLOWED, "")
    # UDP without an answer is blocked, never allowed.
    assert seen(6) == (Outcome.BLOCKED, "timeout")
    assert seen(7) == (Outcome.REFUSED, "port unreachable")
    assert seen(8) == (Outcome.ERROR, "network is unreachable")
    outcome, detail = seen(9)
    assert outcome is Outcome.ERROR and detail.startswith("agnhost connect exit 127: ") and "/agnhost: not found" in detail


def test_agnhost_connect_results() -> None:
    # What agnhost connect prints on failure: the class first (kubernetes
    # test/images/agnhost/connect/connect.go).
    def sctp(code: int, stderr: bytes) -> tuple[Outcome, str]:
        found = observation(ProbeResult(0, code, 1000, b"", stderr), Protocol.SCTP, "x/a", 1.0, "")
        return found.outcome, found.detail

    assert sctp(0, b"") == (Outcome.ALLOWED, "")
    assert sctp(1, b"TIMEOUT\n") == (Outcome.BLOCKED, "timeout")
    assert sctp(1, b"REFUSED\n") == (Outcome.REFUSED, "connection refused")
    assert sctp(1, b"OTHER: dial sctp 192.168.1.4:9000: connect: protocol not supported\n") == (
        Outcome.ERROR,
        "agnhost connect exit 1: OTHER: dial sctp 192.168.1.4:9000: connect: protocol not supported",
    )


def test_garbage_is_ignored_and_missing_results_are_errors() -> None:
    text = (
        "warning: something\n\x1b[31mNPH\x1b[0m\nNPH 0 0 5 782f61 -\nNPH 0 0 6 782f61 -\n"
        "NPH 1 0 5 zz -\nNPH 2 0\nNPH-ERROR 3 argument(s) left over: 3 - 1\n"
    )
    lines, problems = parse_output(text)
    assert set(lines) == {0}
    assert lines[0].elapsed_ms == 5
    assert problems[0] == "probe 0 reported twice"
    assert any("malformed result line 'NPH 1 0 5 zz -'" in p for p in problems)
    assert any("malformed result line 'NPH 2 0'" in p for p in problems)
    assert any("argument(s) left over" in p for p in problems)
    missing = observation(lines.get(1), Protocol.TCP, "x/a", 1.0, "cmd", "exec in x/a: no exit after 14s")
    assert (missing.outcome, missing.detail, missing.command) == (Outcome.ERROR, "exec in x/a: no exit after 14s", "cmd")
    none = observation(None, Protocol.TCP, "x/a", 1.0, "")
    assert none.detail == "the probe script printed no result for this probe"


def test_empty_output_yields_nothing() -> None:
    assert parse_output("") == ({}, [])


def test_script_arguments_are_the_shared_client_command_lines() -> None:
    targets = [
        ProbeTarget(0, Protocol.TCP, "192.168.1.5", 80),
        ProbeTarget(1, Protocol.UDP, "192.168.1.6", 53),
        ProbeTarget(2, Protocol.SCTP, "192.168.2.9", 9000),
    ]
    args = script_command(targets, 1.5, parallel=8)
    assert args[:2] == ["sh", "-c"] and "NPH" in args[2]
    curl = ["curl", "-q", "-sS", "-v", "--noproxy", "*", "--connect-timeout", "1.5", "-m", "1.5", "http://192.168.1.5:80/"]
    nc = ["nc", "-u", "-n", "-W", "1", "-w", "2", "192.168.1.6", "53"]
    agnhost = ["/agnhost", "connect", "192.168.2.9:9000", "--timeout=1500ms", "--protocol=sctp"]
    assert args[3:] == [
        "netpol-harness-probe",
        "8",
        "0", "-", str(len(curl)), *curl,
        "1", "probe", str(len(nc)), *nc,
        "2", "-", str(len(agnhost)), *agnhost,
    ]  # fmt: skip
    # Batches of at most 8 wait as long as their slowest client (nc: whole seconds), plus start-up.
    assert round_timeout(targets, 1.5, parallel=8) == 1 * (2.0 + 2) + 10
    assert round_timeout(targets * 4, 1.5, parallel=8) == 2 * (2.0 + 2) + 10


KUBECONFIG = "/home/me/.pytest-kind/netpol-harness/kubeconfig"
CONTEXT = "kind-netpol-harness"


def test_reproduce_lines_run_the_same_client_through_kubectl_exec() -> None:
    tcp = reproduce_command(KUBECONFIG, CONTEXT, "shop", "web", "agnhost", Protocol.TCP, "192.168.1.7", 8080, 1.0)
    assert tcp == (
        f"kubectl --kubeconfig {KUBECONFIG} --context {CONTEXT} exec -n shop web -c agnhost -- "
        "curl -q -sS -v --noproxy '*' --connect-timeout 1 -m 1 http://192.168.1.7:8080/"
    )
    udp = reproduce_command(KUBECONFIG, CONTEXT, "shop", "web", "agnhost", Protocol.UDP, "192.168.1.7", 53, 0.5)
    assert udp == (
        f"echo probe | kubectl --kubeconfig {KUBECONFIG} --context {CONTEXT} exec -i -n shop web -c agnhost -- "
        "nc -u -n -W 1 -w 1 192.168.1.7 53"
    )
    sctp = reproduce_command(None, None, "nph-r1-shop", "web", "agnhost", Protocol.SCTP, "192.168.1.7", 9000, 1.0)
    assert (
        sctp == "kubectl exec -n nph-r1-shop web -c agnhost -- /agnhost connect 192.168.1.7:9000 --timeout=1000ms --protocol=sctp"
    )
    assert shlex.split(tcp)[-1] == "http://192.168.1.7:8080/"
    assert kubectl_line(KUBECONFIG, CONTEXT, ["get", "pods"]) == f"kubectl --kubeconfig {KUBECONFIG} --context {CONTEXT} get pods"
