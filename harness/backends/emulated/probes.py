"""What one probe runs inside the source pod's network namespace (the clients of
:mod:`harness.core.probe_clients`), how to reproduce it by hand, and what its
result means."""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.matrix import Outcome
from harness.core.probe_clients import classify, client_argv, client_wait, reproduce_line
from harness.core.topology import Protocol

#: Seconds a probe process may overrun its own timeout before it is killed.
KILL_GRACE = 2.0


@dataclass(frozen=True)
class ProbeCommand:
    """The command of one probe and what it should see."""

    netns: str
    protocol: Protocol
    address: str
    port: int
    identity: str
    timeout: float

    @property
    def argv(self) -> tuple[str, ...]:
        return client_argv(self.protocol, self.address, self.port, self.timeout)[0]

    @property
    def stdin(self) -> bytes | None:
        return client_argv(self.protocol, self.address, self.port, self.timeout)[1]

    @property
    def limit(self) -> float:
        """Seconds after which the process is killed."""
        return client_wait(self.protocol, self.timeout) + KILL_GRACE

    @property
    def shell(self) -> str:
        """The command to paste as root to run the same probe by hand."""
        return reproduce_line(["ip", "netns", "exec", self.netns], self.protocol, self.address, self.port, self.timeout)


def probe_command(netns: str, protocol: Protocol, address: str, port: int, identity: str, timeout: float) -> ProbeCommand:
    client_argv(protocol, address, port, timeout)  # fails now for a protocol without a client
    return ProbeCommand(netns, protocol, address, port, identity, timeout)


def interpret(command: ProbeCommand, returncode: int | None, stdout: bytes, stderr: bytes, elapsed: float) -> tuple[Outcome, str]:
    """Outcome and detail of a finished probe. ``returncode`` None: it was killed
    after overrunning its timeout."""
    return classify(command.protocol, command.identity, command.timeout, returncode, stdout, stderr, elapsed, command.limit)
