"""Starting, awaiting and stopping the endpoint server processes of a deployment,
forked by one launcher process per backend."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import harness
from harness.backends.emulated.integrity import ServerCheck
from harness.backends.emulated.system import child_environment, process_status
from harness.core.errors import BackendError
from harness.core.spawn import popen_own_session
from harness.core.topology import Endpoint, Protocol

#: Seconds the servers of a deployment get to bind their ports.
READY_TIMEOUT = 20.0
#: Seconds a server gets to exit after its standard input closes.
STOP_TIMEOUT = 3.0


@dataclass
class _Server:
    endpoint_id: str
    key: str
    log: Path


def server_argv(netns: str, endpoint: Endpoint, detached: bool = False, dns: Path | None = None) -> list[str]:
    """The command line that serves one endpoint on its own (what the launcher's
    children do, for running one by hand)."""
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
    for port in _served(endpoint, Protocol.TCP):
        argv += ["--tcp", str(port)]
    for port in _served(endpoint, Protocol.UDP):
        argv += ["--udp", str(port)]
    if detached:
        argv.append("--detached")
    if dns is not None:
        argv += ["--dns", str(dns)]
    return argv


def _served(endpoint: Endpoint, protocol: Protocol) -> list[int]:
    # SCTP: this kernel has none, so there is nothing to serve (probes say so).
    return [spec.port for spec in endpoint.ports if spec.protocol is protocol]


def _import_path() -> str:
    """PYTHONPATH of a server (run with ``-S``, without site-packages): this
    package's root, and dnslib's, which the cluster DNS pod's server imports."""
    roots = [str(Path(harness.__file__).resolve().parent.parent)]
    spec = importlib.util.find_spec("dnslib")
    if spec is not None and spec.origin:
        roots.append(str(Path(spec.origin).resolve().parent.parent))
    return os.pathsep.join(dict.fromkeys(roots))


def server_environment() -> dict[str, str]:
    """The environment of a server process (or the launcher): the module is this
    package's, importable wherever the harness is imported from (a checkout or
    site-packages)."""
    env = child_environment()
    env["PYTHONPATH"] = _import_path()
    return env


def _gone(pid: int) -> bool:
    """The process has ended (or is a zombie not reaped yet)."""
    fields = process_status(pid)
    return not fields or fields[0] in ("Z", "X")


class ServerLauncher:
    """The launcher process (``server.py --launcher``): it has imported the server
    code once and forks one server per endpoint into the endpoint's namespace, so a
    network of many pods starts in milliseconds instead of a Python start each. One
    per backend, for its whole life; it ends when the backend closes (or when this
    process dies: its standard input closes), and with it every server not released
    (a kept network's)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._buffer = b""
        self._keys = itertools.count()
        #: What the launcher said of each server, by key.
        self.pids: dict[str, int] = {}
        self.ready: set[str] = set()
        self.failed: dict[str, str] = {}
        self.status: dict[str, int] = {}

    def _running(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            env = server_environment()
            self._errors = tempfile.TemporaryFile()
            try:
                # Its own session: a Ctrl-C meant for the harness must not kill the
                # servers halfway through a probe round; the harness stops them.
                self.process = popen_own_session(
                    [sys.executable, "-S", "-m", "harness.backends.emulated.server", "--launcher"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self._errors,
                    env=env,
                )
            except OSError as err:
                raise BackendError(f"cannot start the server launcher: {err.strerror or err}") from None
            assert self.process.stdout is not None
            os.set_blocking(self.process.stdout.fileno(), False)
        return self.process

    def new_key(self) -> str:
        return str(next(self._keys))

    def send(self, request: Mapping[str, object]) -> None:
        process = self._running()
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BackendError(f"the server launcher has ended: {self.ended()}") from None

    def ended(self) -> str:
        """How the launcher ended, with what it wrote on its way out."""
        code = self.process.poll() if self.process is not None else None
        said = ""
        if self._errors is not None:
            self._errors.seek(0)
            said = self._errors.read()[-2000:].decode(errors="replace").strip()
        how = "still running" if code is None else (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
        return f"{how}{': ' + said if said else ''}"

    def read(self, timeout: float = 0.0) -> None:
        """Take in what the launcher said, waiting at most ``timeout`` seconds for it
        to say something."""
        process = self.process
        if process is None or process.stdout is None:
            return
        if timeout > 0:
            select.select([process.stdout], [], [], timeout)
        try:
            chunk = process.stdout.read()
        except BlockingIOError:
            chunk = b""
        if chunk:
            self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._take(line.decode(errors="replace"))

    def _take(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        key, _, detail = rest.partition(" ")
        if word == "started":
            self.pids[key] = int(detail)
        elif word == "ready":
            # The server's own line, which can come before the launcher's "started".
            self.pids.setdefault(key, int(detail))
            self.ready.add(key)
        elif word == "failed":
            self.failed[key] = detail
        elif word in ("exited", "stopped"):
            self.status[key] = int(detail)

    def wait(self, done: Callable[[], bool], limit: float) -> bool:
        """Read what the launcher says until ``done()`` holds (True) or ``limit``
        seconds pass, or the launcher ends (False)."""
        deadline = time.monotonic() + limit
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or (self.process is not None and self.process.poll() is not None):
                self.read()
                return done()
            self.read(timeout=min(left, 0.5))
        return True

    def close(self) -> None:
        """End the launcher: it stops every server not released, then exits."""
        process, self.process = self.process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            process.wait(timeout=STOP_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._errors is not None:
            self._errors.close()
            self._errors = None


class EndpointServers:
    """One server process per endpoint that serves a TCP or UDP port, forked by the
    backend's launcher. ``detached`` servers outlive the harness (a network kept
    after the session)."""

    def __init__(self, log_dir: Path, launcher: ServerLauncher, detached: bool = False) -> None:
        self.log_dir = log_dir
        self.launcher = launcher
        self.detached = detached
        self._servers: list[_Server] = []
        self._endpoints: dict[str, Endpoint] = {}

    def start(self, endpoints: Mapping[str, Endpoint], netns: Mapping[str, str], dns: Mapping[str, Path] | None = None) -> None:
        """Start the servers of ``endpoints`` (id → endpoint, in ``netns``: id →
        namespace) and wait until every one listens; ``dns``: the records file of
        each endpoint that answers DNS."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for endpoint_id, endpoint in endpoints.items():
            if not any(p.protocol in (Protocol.TCP, Protocol.UDP) for p in endpoint.ports):
                continue
            self._endpoints[endpoint_id] = endpoint
            server = _Server(endpoint_id, self.launcher.new_key(), self.log_dir / f"{netns[endpoint_id]}.log")
            record = (dns or {}).get(endpoint_id)
            self.launcher.send(
                {
                    "op": "start",
                    "key": server.key,
                    "netns": netns[endpoint_id],
                    "identity": endpoint.id,
                    "tcp": _served(endpoint, Protocol.TCP),
                    "udp": _served(endpoint, Protocol.UDP),
                    "dns": str(record) if record is not None else None,
                    "detached": self.detached,
                    "log": str(server.log),
                }
            )
            self._servers.append(server)
        self._wait_ready()

    def _wait_ready(self) -> None:
        launcher = self.launcher
        keys = {s.key for s in self._servers}
        listening = launcher.wait(lambda: keys <= launcher.ready | set(launcher.failed) | set(launcher.status), READY_TIMEOUT)
        for server in self._servers:
            if server.key in launcher.failed or server.key in launcher.status:
                said = server.log.read_text(errors="replace").strip() if server.log.exists() else ""
                why = said or launcher.failed.get(server.key) or f"exit status {launcher.status.get(server.key)}"
                raise BackendError(f"the server of {server.endpoint_id} did not start: {why}")
        if not listening:
            late = ", ".join(s.endpoint_id for s in self._servers if s.key not in launcher.ready)
            if launcher.process is not None and launcher.process.poll() is not None:
                raise BackendError(f"the server launcher ended before the servers of {late} listened: {launcher.ended()}")
            raise BackendError(f"servers of {late} were not listening after {READY_TIMEOUT:g}s")

    @property
    def pids(self) -> list[int]:
        return [self.launcher.pids[s.key] for s in self._servers if s.key in self.launcher.pids]

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
        launcher = self.launcher
        launcher.read()
        dead = [s for s in self._servers if s.key not in launcher.status and _gone(launcher.pids.get(s.key, 0))]
        if dead:
            # Ended, and not yet reported: the launcher reaps within a fraction of a second.
            launcher.wait(lambda: all(s.key in launcher.status for s in dead), 2.0)
        gone = []
        for server in self._servers:
            code = launcher.status.get(server.key)
            if code is None and server in dead:
                gone.append(f"the server of {server.endpoint_id} has exited (the launcher {launcher.ended()})")
            elif code is not None:
                how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                gone.append(f"the server of {server.endpoint_id} has exited ({how})")
        return gone

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`) and
        wait until the launcher has reaped them all."""
        servers, self._servers = self._servers, []
        keys = [s.key for s in servers if s.key not in self.launcher.status]
        if not keys or self.launcher.process is None or self.launcher.process.poll() is not None:
            return
        self.launcher.send({"op": "stop", "keys": keys, "grace": STOP_TIMEOUT})
        self.launcher.wait(lambda: all(k in self.launcher.status for k in keys), STOP_TIMEOUT + 5)

    def release(self) -> None:
        """Leave detached servers running (a kept network): the launcher does not
        stop them when it ends."""
        servers, self._servers = self._servers, []
        if servers and self.launcher.process is not None and self.launcher.process.poll() is None:
            self.launcher.send({"op": "release", "keys": [s.key for s in servers]})
