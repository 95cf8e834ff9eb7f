"""Starting, awaiting and stopping the endpoint server processes of a deployment."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

import harness
from harness.backends.emulated.integrity import ServerCheck
from harness.backends.emulated.system import child_environment
from harness.core.errors import BackendError
from harness.core.topology import Endpoint, Protocol

#: Seconds the servers of a deployment get to bind their ports.
READY_TIMEOUT = 20.0
#: Seconds a server gets to exit after its standard input closes.
STOP_TIMEOUT = 3.0


@dataclass
class _Server:
    endpoint_id: str
    process: subprocess.Popen[bytes]
    log: Path
    ready: bool = False
    seen: bytes = b""


def server_argv(netns: str, endpoint: Endpoint, detached: bool = False, dns: Path | None = None) -> list[str]:
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        sys.executable,
        "-S",
        "-m",
        "harness.backends.emulated.server",
        "--identity",
        endpoint.id,
    ]
    for spec in endpoint.ports:
        if spec.protocol is Protocol.TCP:
            argv += ["--tcp", str(spec.port)]
        elif spec.protocol is Protocol.UDP:
            argv += ["--udp", str(spec.port)]
        # SCTP: this kernel has none, so there is nothing to serve (probes say so).
    if detached:
        argv.append("--detached")
    if dns is not None:
        argv += ["--dns", str(dns)]
    return argv


def _import_path() -> str:
    """PYTHONPATH of a server (run with ``-S``, without site-packages): this
    package's root, and dnslib's, which the cluster DNS pod's server imports."""
    roots = [str(Path(harness.__file__).resolve().parent.parent)]
    spec = importlib.util.find_spec("dnslib")
    if spec is not None and spec.origin:
        roots.append(str(Path(spec.origin).resolve().parent.parent))
    return os.pathsep.join(dict.fromkeys(roots))


class EndpointServers:
    """One server process per endpoint that serves a TCP or UDP port. ``detached``
    servers outlive the harness (a network kept after the session)."""

    def __init__(self, log_dir: Path, detached: bool = False) -> None:
        self.log_dir = log_dir
        self.detached = detached
        self._servers: list[_Server] = []
        self._endpoints: dict[str, Endpoint] = {}

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self._servers]

    def checks(self, addresses: Mapping[str, object]) -> list[ServerCheck]:
        """One request per protocol each server serves: what shows it answers."""
        checks = []
        for server in self._servers:
            endpoint = self._endpoints[server.endpoint_id]
            for protocol in (Protocol.TCP, Protocol.UDP):
                port = next((p.port for p in endpoint.ports if p.protocol is protocol), None)
                if port is not None:
                    checks.append(ServerCheck(endpoint.id, str(addresses[endpoint.id]), port, protocol))
        return checks

    def exited(self) -> list[str]:
        """What became of the servers that are no longer running."""
        gone = []
        for server in self._servers:
            code = server.process.poll()
            if code is not None:
                how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                gone.append(f"the server of {server.endpoint_id} has exited ({how})")
        return gone

    def start(self, endpoints: Mapping[str, Endpoint], netns: Mapping[str, str], dns: Mapping[str, Path] | None = None) -> None:
        """Start a server for each endpoint with a TCP/UDP port and wait until all
        are listening. Raises :class:`BackendError` with the server's own error
        when one cannot start."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = child_environment()
        # The server is this package's module: make it importable wherever the
        # harness is imported from (a checkout or site-packages).
        env["PYTHONPATH"] = _import_path()
        for endpoint_id, endpoint in endpoints.items():
            if not any(p.protocol in (Protocol.TCP, Protocol.UDP) for p in endpoint.ports):
                continue
            self._endpoints[endpoint_id] = endpoint
            log = self.log_dir / f"{netns[endpoint_id]}.log"
            try:
                with log.open("wb") as stderr:
                    process = subprocess.Popen(
                        server_argv(netns[endpoint_id], endpoint, self.detached, (dns or {}).get(endpoint_id)),
                        stdin=subprocess.DEVNULL if self.detached else subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        env=env,
                        # Its own session: a Ctrl-C meant for the harness must not kill the
                        # servers halfway through a probe round; the harness stops them.
                        start_new_session=True,
                    )
            except OSError as err:
                # Out of processes or file descriptors, for instance; the caller
                # stops the servers started so far.
                raise BackendError(f"cannot start the server of {endpoint_id}: {err.strerror or err}") from None
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            self._servers.append(_Server(endpoint_id, process, log))
        self._wait_ready()

    def _wait_ready(self) -> None:
        def all_ready() -> bool:
            for server in self._servers:
                if server.ready:
                    continue
                server.seen += _read_available(server.process.stdout)
                if b"ready\n" in server.seen:
                    server.ready = True
                elif server.process.poll() is not None:
                    error = server.log.read_text(errors="replace").strip() or f"exit status {server.process.returncode}"
                    raise BackendError(f"the server of {server.endpoint_id} did not start: {error}")
            return all(s.ready for s in self._servers)

        try:
            Retrying(
                stop=stop_after_delay(READY_TIMEOUT),
                wait=wait_fixed(0.02),
                retry=retry_if_result(lambda ready: not ready),
            )(all_ready)
        except RetryError:
            late = ", ".join(s.endpoint_id for s in self._servers if not s.ready)
            raise BackendError(f"servers of {late} were not listening after {READY_TIMEOUT:g}s") from None

    def release(self) -> None:
        """Leave detached servers running (a kept network): close the harness's
        ends of their pipes only."""
        servers, self._servers = self._servers, []
        for server in servers:
            if server.process.stdout is not None:
                server.process.stdout.close()
            # Never waited for: it outlives this process on purpose (cleanup kills
            # it). Marked done so that Popen neither reaps nor warns about it.
            server.process.returncode = 0

    def stop(self) -> None:
        """Close every server's standard input (it exits), then kill the ones still
        running after :data:`STOP_TIMEOUT` and reap all."""
        servers, self._servers = self._servers, []
        for server in servers:
            for stream in (server.process.stdin, server.process.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for server in servers:
            try:
                server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def _read_available(stream: IO[bytes] | None) -> bytes:
    if stream is None:
        return b""
    try:
        return stream.read() or b""
    except BlockingIOError:
        return b""
