"""What one probe runs inside the source pod's network namespace (the clients of
:mod:`harness.core.probe_clients`), how to reproduce it by hand, and what its
result means."""

from __future__ import annotations

from dataclasses import dataclass

from harness.backends.emulated.services import SOURCE_PORT_BLOCK
from harness.core.matrix import Outcome
from harness.core.probe_clients import classify, client_argv, client_wait, shell_line
from harness.core.topology import Protocol

#: Seconds a probe process may overrun its own timeout before it is killed.
KILL_GRACE = 2.0
#: Seconds the resolver of a name probe may wait for the DNS (``timeout:1
#: attempts:1`` in the pod's resolv.conf): nc resolves before its own wait starts.
RESOLVER_WAIT = 1.0


@dataclass(frozen=True)
class ProbeCommand:
    """The command of one probe and what it should see."""

    netns: str
    argv: tuple[str, ...]
    stdin: bytes | None
    protocol: Protocol
    identity: str
    timeout: float
    #: The probe resolves a name: it runs under ``ip netns exec``, which mounts the
    #: namespace's own /etc/netns/NAME/resolv.conf over /etc/resolv.conf (ip-netns(8)).
    resolve: bool = False

    @property
    def limit(self) -> float:
        """Seconds after which the process is killed."""
        return client_wait(self.protocol, self.timeout) + KILL_GRACE + (RESOLVER_WAIT if self.resolve else 0.0)

    @property
    def launch_argv(self) -> tuple[str, ...]:
        """What the launcher starts inside the namespace: the client itself, or for
        a name, the client under ``ip netns exec`` for the namespace's resolver."""
        return ("ip", "netns", "exec", self.netns, *self.argv) if self.resolve else self.argv

    @property
    def shell(self) -> str:
        """The command to paste as root to run the same probe by hand."""
        return shell_line(["ip", "netns", "exec", self.netns], self.argv, self.stdin)


def probe_command(
    netns: str,
    protocol: Protocol,
    address: str,
    port: int,
    identity: str,
    timeout: float,
    source_port: int | None = None,
    resolve: bool = False,
) -> ProbeCommand:
    # A Service probe's block of source ports (harness.backends.emulated.services).
    argv, stdin = client_argv(protocol, address, port, timeout, source_port, resolve, SOURCE_PORT_BLOCK)
    return ProbeCommand(netns, argv, stdin, protocol, identity, timeout, resolve)


def interpret(command: ProbeCommand, returncode: int | None, stdout: bytes, stderr: bytes, elapsed: float) -> tuple[Outcome, str]:
    """Outcome and detail of a finished probe. ``returncode`` None: it was killed
    after overrunning its timeout."""
    return classify(command.protocol, command.identity, command.timeout, returncode, stdout, stderr, elapsed, command.limit)
