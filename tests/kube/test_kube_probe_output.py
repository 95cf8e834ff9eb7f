"""The probe script's output, as recorded from real runs, read back into observations."""

from __future__ import annotations

import shlex

from harness.core.matrix import Outcome
from harness.core.topology import Protocol
from harness.kube.probe_script import (
    ProbeClass,
    ProbeTarget,
    kubectl_exec_command,
    observation,
    parse_output,
    round_timeout,
    script_command,
    seconds_arg,
    single_probe_command,
)

# Recorded from a real run of probe.sh (dash, socat 1.7.4) against the servers of
# test_kube_probe_script.py: 0 and 3 answer x/a and y/b over TCP, 1 is closed, 2
# drops SYNs, 4 accepts and stays silent, 5 answers over UDP, 6 never answers, 7 is
# closed (ICMP port unreachable), 8 is a name that does not resolve, 9 is SCTP
# without agnhost, 10 has no route.
RECORDED = """\
NPH 9 UNKNOWN 127 0 - no_SCTP_client:_neither_socat_nor_/agnhost_in_the_probe_image
NPH 10 OTHER 1 30 - connect_5__AF=2_10.9.9.9:80__16_:_Network_is_unreachable
NPH 7 REFUSED 1 20 - read_5__0x55a297455000__8192_:_Connection_refused
NPH 1 REFUSED 1 20 - connect_5__AF=2_127.0.0.1:18081__16_:_Connection_refused
NPH 8 DNS 1 50 - getaddrinfo__nonexistent.invalid____NULL____1_2_1_6______:_Temporary_failure_in_name_resolution
NPH 3 OK 0 40 y/b -
NPH 0 OK 0 50 x/a -
NPH 2 TIMEOUT 1 1010 - connecting_to_AF=2_127.0.0.1:18082:_Connection_timed_out
NPH 6 TIMEOUT 0 1030 - -
NPH 4 NOREPLY 0 1030 - -
NPH 5 OK 0 1050 x/a -
"""

# agnhost connect lines (SCTP, or every protocol when socat is missing): its
# stderr starts with the error class; it does not say who answered.
AGNHOST = """\
Defaulted container "agnhost" out of: agnhost
NPH 0 OK 0 14 - -
NPH 1 TIMEOUT 1 1002 - TIMEOUT
NPH 2 REFUSED 1 3 - REFUSED
NPH 3 OTHER 1 9 - OTHER:_dial_sctp_192.168.1.4:9000:_connect:_protocol_not_supported
"""


def test_recorded_socat_lines_parse():
    lines, problems = parse_output(RECORDED)
    assert problems == []
    assert [lines[i].klass for i in range(11)] == [
        ProbeClass.OK,
        ProbeClass.REFUSED,
        ProbeClass.TIMEOUT,
        ProbeClass.OK,
        ProbeClass.NOREPLY,
        ProbeClass.OK,
        ProbeClass.TIMEOUT,
        ProbeClass.REFUSED,
        ProbeClass.DNS,
        ProbeClass.UNKNOWN,
        ProbeClass.OTHER,
    ]
    assert lines[5].elapsed == 1.050
    assert lines[0].responder == "x/a"


def test_outcomes_of_recorded_lines():
    lines, _ = parse_output(RECORDED)

    def seen(i, identity="x/a"):
        return observation(lines[i], identity, "cmd")

    assert seen(0).outcome is Outcome.ALLOWED and seen(0).detail == "" and seen(0).command == "cmd"
    assert (seen(1).outcome, seen(1).detail) == (Outcome.REFUSED, "connection refused")
    assert (seen(2).outcome, seen(2).detail) == (Outcome.BLOCKED, "timeout")
    # Someone else answered.
    assert (seen(3).outcome, seen(3).detail) == (Outcome.WRONG_RESPONDER, "answered by y/b")
    assert seen(3, identity="y/b").outcome is Outcome.ALLOWED
    assert (seen(4).outcome, seen(4).detail) == (Outcome.WRONG_RESPONDER, "connected, but nothing answered")
    assert seen(5).outcome is Outcome.ALLOWED and seen(5).elapsed == 1.050
    # UDP without an answer is blocked, never allowed.
    assert (seen(6).outcome, seen(6).detail) == (Outcome.BLOCKED, "timeout")
    assert seen(7).outcome is Outcome.REFUSED
    assert seen(8).outcome is Outcome.ERROR and seen(8).detail.startswith("DNS: getaddrinfo")
    assert seen(9).outcome is Outcome.ERROR and "no SCTP client" in seen(9).detail and "exit code 127" in seen(9).detail
    assert seen(10).outcome is Outcome.ERROR and "Network is unreachable" in seen(10).detail


def test_agnhost_lines_have_no_responder_and_count_as_allowed():
    lines, problems = parse_output(AGNHOST)
    assert problems == []
    assert observation(lines[0], "x/a", "").outcome is Outcome.ALLOWED
    assert observation(lines[1], "x/a", "").outcome is Outcome.BLOCKED
    assert observation(lines[2], "x/a", "").outcome is Outcome.REFUSED
    other = observation(lines[3], "x/a", "")
    assert other.outcome is Outcome.ERROR and "protocol not supported" in other.detail


def test_garbage_is_ignored_and_missing_results_are_errors():
    text = (
        "warning: something\n\x1b[31mNPH\x1b[0m\nNPH 0 OK 0 5 x/a -\nNPH 0 OK 0 6 x/a -\n"
        "NPH 1 MAYBE 0 5 - -\nNPH 2 OK\nNPH-ERROR 3 argument(s) left over: 3 TCP 1.2.3.4\n"
    )
    lines, problems = parse_output(text)
    assert set(lines) == {0}
    assert lines[0].elapsed_ms == 5
    assert problems[0] == "probe 0 reported twice"
    assert any("malformed result line 'NPH 1 MAYBE" in p for p in problems)
    assert any("malformed result line 'NPH 2 OK'" in p for p in problems)
    assert any("argument(s) left over" in p for p in problems)
    missing = observation(lines.get(1), "x/a", "cmd", "exec in x/a: no exit after 14s")
    assert (missing.outcome, missing.detail, missing.command) == (Outcome.ERROR, "exec in x/a: no exit after 14s", "cmd")
    assert observation(None, "x/a", "").detail == "the probe script printed no result for this probe"


def test_empty_output_yields_nothing():
    assert parse_output("") == ({}, [])


def test_identity_is_compared_as_the_script_prints_it():
    lines, _ = parse_output("NPH 0 OK 0 5 weird_name_ -\n")
    assert observation(lines[0], "weird name!", "").outcome is Outcome.ALLOWED


def test_script_arguments():
    targets = [ProbeTarget(0, Protocol.TCP, "192.168.1.5", 80), ProbeTarget(1, Protocol.SCTP, "192.168.2.9", 9000)]
    args = script_command(targets, 1.5, parallel=8)
    assert args[:2] == ["sh", "-c"]
    assert args[3:] == [
        "netpol-harness-probe",
        "1.5",
        "1500",
        "8",
        "0",
        "TCP",
        "192.168.1.5",
        "80",
        "1",
        "SCTP",
        "192.168.2.9",
        "9000",
    ]
    assert "NPH" in args[2]
    assert seconds_arg(1.0) == "1" and seconds_arg(0.25) == "0.25"
    # Two batches of at most two timeouts each, plus start-up.
    assert round_timeout(40, 1.0, parallel=32) == 2 * (2 * 1.0 + 2) + 10


def test_reproduce_command_is_a_pasteable_kubectl_exec():
    command = kubectl_exec_command(
        "/home/me/.pytest-kind/pytest-kind/kubeconfig",
        "kind-pytest-kind",
        "shop",
        "web",
        "agnhost",
        single_probe_command(Protocol.TCP, "192.168.1.7", 8080, 1.0),
    )
    assert command.startswith(
        "kubectl --kubeconfig /home/me/.pytest-kind/pytest-kind/kubeconfig --context kind-pytest-kind "
        "exec -n shop web -c agnhost -- sh -c "
    )
    argv = shlex.split(command)
    assert argv[-1] == "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | socat -T1 -t1 - TCP4:192.168.1.7:8080,connect-timeout=1"
    udp = single_probe_command(Protocol.UDP, "192.168.1.7", 53, 0.5)
    assert udp[-1] == "printf 'hostname\\n' | socat -T0.5 -t0.5 - UDP4:192.168.1.7:53"
    assert single_probe_command(Protocol.SCTP, "192.168.1.7", 9000, 1.0) == [
        "/agnhost",
        "connect",
        "192.168.1.7:9000",
        "--timeout=1000ms",
        "--protocol=sctp",
    ]
    assert single_probe_command(Protocol.TCP, "10.0.0.1", 80, 1.0, socat=False)[0] == "/agnhost"
    plain = kubectl_exec_command(None, None, "nph-r1-shop", "web", "agnhost", ["true"])
    assert plain == "kubectl exec -n nph-r1-shop web -c agnhost -- true"
