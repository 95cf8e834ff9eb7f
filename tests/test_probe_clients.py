"""Reading a batch curl's standard error.

The text below is what curl 7.88.1 wrote for a batch of two transfers (one
answered, one refused) run with the options of
:func:`harness.core.probe_clients.curl_batch_argv`, recorded on this machine
against a server on loopback; it is cut into chunks at every position, as the pipe
may deliver it.
"""

from __future__ import annotations

from harness.core.matrix import Outcome
from harness.core.probe_clients import TransferReport, connect_failures, tcp_outcome, transfer_reports

RECORDED = (
    "*   Trying 127.0.0.1:8080...\n"
    "*   Trying 127.0.0.1:1...\n"
    "* Connected to 127.0.0.1 (127.0.0.1) port 8080 (#0)\n"
    "> GET / HTTP/1.1\n"
    "> Host: 127.0.0.1:8080\n"
    "> User-Agent: curl/7.88.1\n"
    "> Accept: */*\n"
    "> \n"
    "* connect to 127.0.0.1 port 1 failed: Connection refused\n"
    "* Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server\n"
    "* Closing connection 1\n"
    "curl: (7) Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server\n"
    "=nph /tmp/b2\t7\t0.000000\tFailed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server\n"
    "* HTTP 1.0, assume close after body\n"
    "< HTTP/1.0 200 OK\n"
    "< Content-Length: 3\n"
    "< \n"
    "{ [3 bytes data]\n"
    "* Closing connection 0\n"
    "=nph /tmp/b1\t0\t0.004137\t\n"
)
REFUSED = TransferReport("/tmp/b2", 7, False, "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server")
ANSWERED = TransferReport("/tmp/b1", 0, True, "")


def test_the_reports_of_a_batch_are_read_in_order() -> None:
    assert transfer_reports(RECORDED) == [REFUSED, ANSWERED]
    assert connect_failures(RECORDED) == {("127.0.0.1", 1): "Connection refused"}


def test_a_mark_inside_a_line_is_not_a_report() -> None:
    assert transfer_reports("< X-Echo: =nph /tmp/b9\t0\t0.1\t\n=nph /tmp/b1\t0\t0.004137\t\n") == [ANSWERED]
    assert transfer_reports("=nph broken line\n") == []


def test_whole_lines_give_the_same_reports_however_the_pipe_cut_them() -> None:
    for cut in range(len(RECORDED)):
        # The reader keeps the unfinished last line for the next chunk, as the probe round does.
        head, tail = RECORDED[:cut], RECORDED[cut:]
        whole = head[: head.rfind("\n") + 1]
        rest = head[len(whole) :] + tail
        assert transfer_reports(whole) + transfer_reports(rest) == [REFUSED, ANSWERED], cut


def test_a_refused_transfer_is_refused_with_the_reason_of_its_connect() -> None:
    reason = connect_failures(RECORDED)[("127.0.0.1", 1)]
    assert tcp_outcome("x/b", REFUSED.exitcode, "", REFUSED.connected, reason, REFUSED.message)[0] is Outcome.REFUSED
    assert tcp_outcome("x/b", ANSWERED.exitcode, "x/b", ANSWERED.connected, "", "") == (Outcome.ALLOWED, "")
