"""What one probe runs (curl for TCP, OpenBSD netcat for UDP), how to reproduce it
by hand, and what its result means.

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
from dataclasses import dataclass

from harness.core.matrix import Observation, Outcome
from harness.core.topology import Protocol

UDP_PAYLOAD = b"probe\n"
#: Seconds a probe process may overrun its own timeout before it is killed.
KILL_GRACE = 2.0

#: How curl -v reports a completed TCP handshake: "* Connected to 192.168.1.10
#: (192.168.1.10) port 80 (#0)".
_CONNECTED = re.compile(r"^\* Connected to ", re.MULTILINE)
_CONNECT_FAILURE = re.compile(r"(?:connect to \S+ port \d+ failed|Immediate connect fail for [^:]+): (?P<reason>.+)")


def _seconds(value: float) -> str:
    return f"{value:g}"


def udp_wait(timeout: float) -> int:
    """nc's ``-w`` for ``timeout``: whole seconds, at least one."""
    return max(1, math.ceil(timeout))


@dataclass(frozen=True)
class ProbeCommand:
    """The command of one probe and what it should see."""

    netns: str
    argv: tuple[str, ...]
    stdin: bytes | None
    protocol: Protocol
    identity: str
    timeout: float

    @property
    def limit(self) -> float:
        """Seconds after which the process is killed."""
        wait = udp_wait(self.timeout) if self.protocol is Protocol.UDP else self.timeout
        return wait + KILL_GRACE

    @property
    def shell(self) -> str:
        """The command to paste as root to run the same probe by hand."""
        command = f"ip netns exec {shlex.quote(self.netns)} {shlex.join(self.argv)}"
        if self.stdin is not None:
            command = f"echo {self.stdin.decode().strip()} | {command}"
        return command


def probe_command(netns: str, protocol: Protocol, address: str, port: int, identity: str, timeout: float) -> ProbeCommand:
    if protocol is Protocol.TCP:
        seconds = _seconds(timeout)
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
        return ProbeCommand(netns, argv, None, protocol, identity, timeout)
    if protocol is Protocol.UDP:
        argv = ("nc", "-u", "-n", "-W", "1", "-w", str(udp_wait(timeout)), address, str(port))
        return ProbeCommand(netns, argv, UDP_PAYLOAD, protocol, identity, timeout)
    raise ValueError(f"no probe command for {protocol}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("*", ">", "<", "{", "}"))]
    return lines[-1] if lines else ""


def _identity_outcome(reply: str, identity: str) -> tuple[Outcome, str]:
    if reply == identity:
        return Outcome.ALLOWED, ""
    return Outcome.WRONG_RESPONDER, f"answered by {reply!r}, expected {identity!r}"


def interpret(command: ProbeCommand, returncode: int | None, stdout: bytes, stderr: bytes, elapsed: float) -> tuple[Outcome, str]:
    """Outcome and detail of a finished probe. ``returncode`` None: it was killed
    after overrunning its timeout."""
    out = stdout.decode(errors="replace").strip()
    err = stderr.decode(errors="replace")
    tool = command.argv[0]
    if returncode is None:
        return Outcome.ERROR, f"{tool} did not finish within {command.limit:g}s and was killed"
    if command.protocol is Protocol.TCP:
        if returncode == 0:
            return _identity_outcome(out, command.identity)
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
        return _identity_outcome(out, command.identity)
    if elapsed < udp_wait(command.timeout) / 2:
        # nc only stops before its wait when the socket reports an error: the ICMP
        # port unreachable of a host where nothing listens on that port.
        return Outcome.REFUSED, "port unreachable"
    return Outcome.BLOCKED, "timeout"


def observation(command: ProbeCommand, returncode: int | None, stdout: bytes, stderr: bytes, elapsed: float) -> Observation:
    outcome, detail = interpret(command, returncode, stdout, stderr, elapsed)
    return Observation(outcome, detail, command.shell, round(elapsed, 3))
