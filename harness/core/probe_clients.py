"""The probe clients every backend runs: curl for TCP, OpenBSD netcat for UDP. Their
command lines, and what their results mean. Pure: the emulated backend runs these
commands inside a pod's network namespace, a cluster backend inside a pod.

TCP: ``curl`` fetches ``http://IP:PORT/``; the body must be the destination's
identity. Exit 28 is a timeout: blocked when the connection was never made (a
dropped SYN), but a wrong responder when it was made (the verbose output, ``-v``,
says "Connected to") and nothing answered the request, since the policies let it
through. Exit 7 with "Connection refused" is a refusal (the packet arrived and
nothing listened); the verbose output gives the reason of other connect failures
such as "Network is unreachable".

Many TCP probes from one source can be one curl process (:func:`curl_batch_argv`):
each URL is a transfer of its own, run in parallel, with its own timeouts counted
from when that transfer starts, its body written to a file of its own, and a
``--write-out`` line on standard error when it ends (exit code, whether it
connected, curl's message), which :func:`parse_transfer_line` reads. A batch
transfer means what the single command means: :func:`tcp_outcome` judges both.
The ``%{exitcode}`` and ``%{errormsg}`` variables need curl 7.75 or later.

UDP: ``nc -u`` sends one datagram and waits for the reply (``-W 1``: exit after
one). Only a reply counts as allowed: silence until the timeout is blocked. When
nothing listens, the ICMP port-unreachable makes nc stop at once with no reply,
which tells a refusal from a timeout. nc's ``-w`` takes whole seconds.

A probe of a DNS name (a Service by name) needs the name resolved first: curl does
it itself and says ``Could not resolve host`` (exit 6), or ``Resolving timed out``
(exit 28) when its connect timeout, which covers resolving, ends first; OpenBSD
netcat resolves with getaddrinfo(3) unless ``-n`` is given, and exits 1 with
``getaddrinfo for host "NAME" port N: ...`` when that fails (netcat.c,
``remote_connect``/``local_listen``: ``errx(1, "getaddrinfo for host ...")``). Both
are ``name-not-resolved``. A probe may also be sent from a given source port
(``--local-port``, ``nc -p``).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from harness.core.matrix import Outcome
from harness.core.topology import Protocol

UDP_PAYLOAD = b"probe\n"

#: How curl -v reports a completed TCP handshake: "* Connected to 192.168.1.10
#: (192.168.1.10) port 80 (#0)".
_CONNECTED = re.compile(r"^\* Connected to ", re.MULTILINE)
_CONNECT_FAILURE = re.compile(r"(?:connect to \S+ port \d+ failed|Immediate connect fail for [^:]+): (?P<reason>.+)")
#: The same lines, naming the address and port: in a batch they tell the transfers apart.
_CONNECT_FAILURES = re.compile(
    r"^\* (?:connect to (?P<address>\S+) port (?P<port>\d+) failed|Immediate connect fail for (?P<immediate>[^:]+)): "
    r"(?P<reason>.+)$",
    re.MULTILINE,
)
#: What starts the line curl writes to standard error after each transfer of a batch.
BATCH_MARK = "=nph "
#: At most this many transfers of one curl process run at once (curl caps
#: ``--parallel-max`` at 300).
BATCH_PARALLEL = 300


def seconds_text(value: float) -> str:
    """``1.0`` → ``1``, ``0.5`` → ``0.5``: curl accepts fractions of a second."""
    return f"{value:g}"


def udp_wait(timeout: float) -> int:
    """nc's ``-w`` for ``timeout``: whole seconds, at least one."""
    return max(1, math.ceil(timeout))


def client_wait(protocol: Protocol, timeout: float) -> float:
    """Seconds the client itself waits at most (nc rounds up to whole seconds)."""
    return float(udp_wait(timeout)) if protocol is Protocol.UDP else timeout


def client_argv(
    protocol: Protocol,
    address: str,
    port: int,
    timeout: float,
    source_port: int | None = None,
    resolve: bool = False,
    source_ports: int = 1,
) -> tuple[tuple[str, ...], bytes | None]:
    """The client's command line and what it reads on standard input. ``resolve``:
    ``address`` is a name to resolve (nc without ``-n``); ``source_port``: the
    port to send from (curl: the first of ``source_ports``, taking the first it
    can bind; nc: that port)."""
    if protocol is Protocol.TCP:
        last = (source_port or 0) + source_ports - 1
        ports = str(source_port) if source_ports <= 1 else f"{source_port}-{last}"
        local = ("--local-port", ports) if source_port is not None else ()
        argv = ("curl", "-q", "-sS", "-v", "--noproxy", "*", *_curl_timeouts(timeout), *local, f"http://{address}:{port}/")
        return argv, None
    if protocol is Protocol.UDP:
        numeric = () if resolve else ("-n",)
        local = ("-p", str(source_port)) if source_port is not None else ()
        argv = ("nc", "-u", *numeric, *local, "-W", "1", "-w", str(udp_wait(timeout)), address, str(port))
        return argv, UDP_PAYLOAD
    raise ValueError(f"no probe client for {protocol}")


def _curl_timeouts(timeout: float) -> tuple[str, ...]:
    seconds = seconds_text(timeout)
    return ("--connect-timeout", seconds, "-m", seconds)


def curl_batch_argv(transfers: Sequence[tuple[str, int, str]], timeout: float) -> tuple[str, ...]:
    """One curl process for many TCP probes: ``(address, port, body file)`` each.
    All run at once (at most :data:`BATCH_PARALLEL`), each bounded by ``timeout``
    from its own start, each with the options of the single probe
    (:func:`client_argv`); after each, a line starting with :data:`BATCH_MARK` on
    standard error (unbuffered, so it arrives when the transfer ends)."""
    argv = [
        "curl",
        "-q",
        "-sS",
        "-v",
        "--no-progress-meter",
        "--noproxy",
        "*",
        *_curl_timeouts(timeout),
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        str(max(1, min(BATCH_PARALLEL, len(transfers)))),
        "--write-out",
        "%{stderr}" + BATCH_MARK + "%{filename_effective}\\t%{exitcode}\\t%{time_connect}\\t%{errormsg}\\n",
    ]
    for address, port, body in transfers:
        argv += ["-o", body, f"http://{address}:{port}/"]
    return tuple(argv)


@dataclass(frozen=True)
class TransferReport:
    """What curl said of one transfer of a batch: the body file it was written
    to, its exit code, whether it connected, and curl's message."""

    body_file: str
    exitcode: int
    connected: bool
    message: str


def parse_transfer_line(line: str) -> TransferReport | None:
    """The report in one line of a batch's standard error, or None when the line
    is not one (curl's verbose output)."""
    if not line.startswith(BATCH_MARK):
        return None
    fields = line[len(BATCH_MARK) :].rstrip("\n").split("\t", 3)
    if len(fields) != 4:
        return None
    body, code, connect, message = fields
    try:
        return TransferReport(body, int(code), float(connect) > 0, message.strip())
    except ValueError:
        return None


def transfer_reports(text: str) -> list[TransferReport]:
    """The reports in a batch's standard error (whole lines), in order: one scan
    of the text instead of one call per line of curl's verbose output, which is
    ten lines or more per transfer."""
    reports = []
    start = text.find(BATCH_MARK)
    while start != -1:
        if start == 0 or text[start - 1] == "\n":
            end = text.find("\n", start)
            report = parse_transfer_line(text[start : len(text) if end == -1 else end])
            if report is not None:
                reports.append(report)
        start = text.find(BATCH_MARK, start + len(BATCH_MARK))
    return reports


def connect_failures(verbose: str) -> dict[tuple[str, int | None], str]:
    """The reasons curl's verbose output gives for failed connects, by (address,
    port), or (address, None) when curl failed before choosing a port."""
    found: dict[tuple[str, int | None], str] = {}
    for match in _CONNECT_FAILURES.finditer(verbose):
        if match["immediate"]:
            found[(match["immediate"].strip(), None)] = match["reason"].strip()
        else:
            found[(match["address"], int(match["port"]))] = match["reason"].strip()
    return found


def tcp_outcome(identity: str, returncode: int, body: str, connected: bool, reason: str, message: str) -> tuple[Outcome, str]:
    """Outcome and detail of one finished curl transfer: its exit code, the body
    it received, whether the TCP connection was made, why a connect failed
    (``reason``, from the verbose output) and curl's own message."""
    if returncode == 0:
        return _identity_outcome(body.strip(), identity)
    if returncode == 6:
        return Outcome.NAME_NOT_RESOLVED, "could not resolve host"
    if returncode == 28 and "Resolving timed out" in message:
        return Outcome.NAME_NOT_RESOLVED, "resolving timed out"
    if returncode == 28:
        if connected:
            return Outcome.WRONG_RESPONDER, "connected, nothing answered"
        return Outcome.BLOCKED, "timeout"
    if returncode == 7:
        if "refused" in reason.lower():
            return Outcome.REFUSED, "connection refused"
        if reason:
            return Outcome.ERROR, reason[:1].lower() + reason[1:]
        return Outcome.ERROR, "could not connect"
    return Outcome.ERROR, f"curl exit {returncode}: {message or 'no message'}"


def reproduce_line(
    runner: Sequence[str],
    protocol: Protocol,
    address: str,
    port: int,
    timeout: float,
    *,
    stdin_runner: Sequence[str] | None = None,
) -> str:
    """The line a user pastes to run the same client by hand: ``runner`` (``ip netns
    exec NS``, ``kubectl exec ... --``) before the client's command line, and, for a
    client that reads its input, ``echo <input> |`` before ``stdin_runner`` (a runner
    that passes standard input on, such as ``kubectl exec -i``) or ``runner``."""
    argv, stdin = client_argv(protocol, address, port, timeout)
    return shell_line(runner, argv, stdin, stdin_runner=stdin_runner)


def shell_line(
    runner: Sequence[str], argv: Sequence[str], stdin: bytes | None, *, stdin_runner: Sequence[str] | None = None
) -> str:
    """``runner`` and a client's command line as one pasteable line, with its input
    (``stdin``) echoed into ``stdin_runner`` (or ``runner``) when it reads one."""
    if stdin is None:
        return shlex.join([*runner, *argv])
    words = [*(stdin_runner if stdin_runner is not None else runner), *argv]
    return f"echo {shlex.quote(stdin.decode().strip())} | {shlex.join(words)}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("*", ">", "<", "{", "}"))]
    return lines[-1] if lines else ""


def _identity_outcome(reply: str, identity: str) -> tuple[Outcome, str]:
    if reply == identity:
        return Outcome.ALLOWED, ""
    return Outcome.WRONG_RESPONDER, f"answered by {reply!r}, expected {identity!r}"


def classify(
    protocol: Protocol,
    identity: str,
    timeout: float,
    returncode: int | None,
    stdout: bytes,
    stderr: bytes,
    elapsed: float,
    limit: float,
) -> tuple[Outcome, str]:
    """Outcome and detail of a finished client. ``returncode`` None: it was killed
    after overrunning ``limit`` seconds."""
    out = stdout.decode(errors="replace").strip()
    err = stderr.decode(errors="replace")
    tool = "curl" if protocol is Protocol.TCP else "nc"
    if returncode is None:
        return Outcome.ERROR, f"{tool} did not finish within {limit:g}s and was killed"
    if protocol is Protocol.TCP:
        match = _CONNECT_FAILURE.search(err)
        reason = match["reason"].strip() if match else (_last_line(err) if returncode == 7 else "")
        return tcp_outcome(identity, returncode, out, bool(_CONNECTED.search(err)), reason, _last_line(err))
    # UDP
    if returncode != 0 and "getaddrinfo for host" in err:
        return Outcome.NAME_NOT_RESOLVED, _last_line(err).removeprefix("nc: ")
    if returncode != 0:
        return Outcome.ERROR, f"nc exit {returncode}: {_last_line(err) or 'no message'}"
    if out:
        return _identity_outcome(out, identity)
    if elapsed < udp_wait(timeout) / 2:
        # nc only stops before its wait when the socket reports an error: the ICMP
        # port unreachable of a host where nothing listens on that port.
        return Outcome.REFUSED, "port unreachable"
    return Outcome.BLOCKED, "timeout"
