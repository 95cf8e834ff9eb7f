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

UDP: ``nc -u`` sends one datagram and waits for the reply (``-W 1``: exit after
one). Only a reply counts as allowed: silence until the timeout is blocked. When
nothing listens, the ICMP port-unreachable makes nc stop at once with no reply,
which tells a refusal from a timeout. nc's ``-w`` takes whole seconds.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence

from harness.core.matrix import Outcome
from harness.core.topology import Protocol

UDP_PAYLOAD = b"probe\n"

#: How curl -v reports a completed TCP handshake: "* Connected to 192.168.1.10
#: (192.168.1.10) port 80 (#0)".
_CONNECTED = re.compile(r"^\* Connected to ", re.MULTILINE)
_CONNECT_FAILURE = re.compile(r"(?:connect to \S+ port \d+ failed|Immediate connect fail for [^:]+): (?P<reason>.+)")


def seconds_text(value: float) -> str:
    """``1.0`` → ``1``, ``0.5`` → ``0.5``: curl accepts fractions of a second."""
    return f"{value:g}"


def udp_wait(timeout: float) -> int:
    """nc's ``-w`` for ``timeout``: whole seconds, at least one."""
    return max(1, math.ceil(timeout))


def client_wait(protocol: Protocol, timeout: float) -> float:
    """Seconds the client itself waits at most (nc rounds up to whole seconds)."""
    return float(udp_wait(timeout)) if protocol is Protocol.UDP else timeout


def client_argv(protocol: Protocol, address: str, port: int, timeout: float) -> tuple[tuple[str, ...], bytes | None]:
    """The client's command line and what it reads on standard input."""
    if protocol is Protocol.TCP:
        seconds = seconds_text(timeout)
        argv: tuple[str, ...] = (
            "curl",
            "-q",
            "-sS",
            "-v",
            "--noproxy",
            "*",
            "--connect-timeout",
            seconds,
            "-m",
            seconds,
            f"http://{address}:{port}/",
        )
        return argv, None
    if protocol is Protocol.UDP:
        return ("nc", "-u", "-n", "-W", "1", "-w", str(udp_wait(timeout)), address, str(port)), UDP_PAYLOAD
    raise ValueError(f"no probe client for {protocol}")


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
        if returncode == 0:
            return _identity_outcome(out, identity)
        if returncode == 28:
            if _CONNECTED.search(err):
                return Outcome.WRONG_RESPONDER, "connected, nothing answered"
            return Outcome.BLOCKED, "timeout"
        if returncode == 7:
            match = _CONNECT_FAILURE.search(err)
            reason = match["reason"].strip() if match else _last_line(err)
            if "refused" in reason.lower():
                return Outcome.REFUSED, "connection refused"
            return Outcome.ERROR, reason[:1].lower() + reason[1:] if reason else "could not connect"
        return Outcome.ERROR, f"curl exit {returncode}: {_last_line(err) or 'no message'}"
    # UDP
    if returncode != 0:
        return Outcome.ERROR, f"nc exit {returncode}: {_last_line(err) or 'no message'}"
    if out:
        return _identity_outcome(out, identity)
    if elapsed < udp_wait(timeout) / 2:
        # nc only stops before its wait when the socket reports an error: the ICMP
        # port unreachable of a host where nothing listens on that port.
        return Outcome.REFUSED, "port unreachable"
    return Outcome.BLOCKED, "timeout"
