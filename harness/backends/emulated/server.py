"""The process behind one emulated endpoint: serves all its ports and answers with
its identity (``x/a``), over HTTP on TCP ports and as a datagram on UDP ports.

The backend forks these servers from one launcher process (``--launcher``, below),
each entering its endpoint's network namespace. One can also be started on its own,
inside the endpoint's namespace::

    ip netns exec NS python -m harness.backends.emulated.server --identity x/a --tcp 80 --udp 80

It then prints ``ready`` once every port is bound, and exits when its standard
input closes; with ``--detached`` it serves until it is killed. For the cluster DNS
pod, with ``--dns RECORDS``, port 53 also answers DNS queries (over UDP,
and over TCP with its two-byte length prefix) from the records file, a JSON mapping
of names to IPv4 addresses the harness rewrites when the Services change (the
server reads it again when its modification time changes). Its DNS messages are
read and written with dnslib. Anything on 53 that is not a DNS query (a probe's
datagram, an HTTP request) is answered with the identity, like any other port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, cast

from harness.backends.emulated.netns import enter_netns

#: How long a client may take to send its request head before it is answered anyway.
_REQUEST_WAIT = 5.0
_BACKLOG = 1024


def http_response(identity: str) -> bytes:
    body = identity.encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


#: The port a cluster DNS pod answers DNS on.
DNS_PORT = 53
#: Seconds a resolver may cache an answer: short, since Services change between scenarios.
_TTL = 5


class DnsRecords:
    """Names (lowercase, without the final dot) → IPv4 address, from a JSON file
    read again whenever it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime: float | None = None
        self._names: dict[str, str] = {}

    def lookup(self) -> dict[str, str]:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return self._names
        if mtime != self._mtime:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    loaded = json.load(handle)
                self._names = {str(k).lower().rstrip("."): str(v) for k, v in dict(loaded).items()}
                self._mtime = mtime
            except (OSError, ValueError, TypeError):
                pass  # half written: keep the last records, read it at the next query
        return self._names


def dns_answer(query: bytes, records: DnsRecords) -> bytes | None:
    """The answer to a DNS query, or None when ``query`` is not one: an A record
    for a known name, no data (NOERROR, no answer) for another type of a known
    name, NXDOMAIN for any other name, as an authoritative server of the zone
    answers."""
    from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

    try:
        request = DNSRecord.parse(query)
    except (DNSError, ValueError, IndexError, KeyError, UnicodeError):
        return None
    if request.header.qr or not request.questions:
        return None
    reply = request.reply()
    names = records.lookup()
    for question in request.questions:
        name = str(question.qname).lower().rstrip(".")
        address = names.get(name)
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif question.qtype == QTYPE.A:
            reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=_TTL))
    packed: bytes = reply.pack()
    return packed


class _DatagramResponder(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes, records: DnsRecords | None = None) -> None:
        self.reply = reply
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport implements DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is None:
            return
        answer = dns_answer(data, self.records) if self.records is not None else None
        self.transport.sendto(answer if answer is not None else self.reply, addr)


def _responder(reply: bytes, records: DnsRecords | None) -> Callable[[], _DatagramResponder]:
    return lambda: _DatagramResponder(reply, records)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def serve(
    identity: str,
    tcp_ports: list[int],
    udp_ports: list[int],
    detached: bool = False,
    dns: str | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve until standard input closes, or with ``detached`` until killed;
    ``ready`` is called once every port is bound (by default: print ``ready``)."""
    response = http_response(identity)
    records = DnsRecords(dns) if dns else None

    async def answer_dns(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        # DNS over TCP: each message after its two-byte length (RFC 1035, 4.2.2).
        assert records is not None
        try:
            length = int.from_bytes(head, "big")
            query = await asyncio.wait_for(reader.readexactly(length), _REQUEST_WAIT)
            reply = dns_answer(query, records)
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            writer.close()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if records is not None and writer.get_extra_info("sockname")[1] == DNS_PORT:
            try:
                head = await asyncio.wait_for(reader.readexactly(2), _REQUEST_WAIT)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                head = b""
            if len(head) == 2 and not head.isalpha():
                await answer_dns(reader, writer, head)
                return
            # An HTTP request (a probe or the health check): answered with the identity.
        try:
            # Read the request head first: closing with unread data would reset the
            # connection before the client sees the answer.
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_WAIT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        try:
            writer.write(response)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass

    loop = asyncio.get_running_loop()
    servers = [await asyncio.start_server(answer, "0.0.0.0", port, backlog=_BACKLOG, reuse_address=True) for port in tcp_ports]
    transports = []
    for port in udp_ports:
        transport, _ = await loop.create_datagram_endpoint(
            _responder(identity.encode(), records if port == DNS_PORT else None),
            local_addr=("0.0.0.0", port),
        )
        transports.append(transport)
    if ready is None:
        print("ready", flush=True)
    else:
        ready()
    try:
        if detached:
            await asyncio.Event().wait()  # until killed
        await _stdin_closed()
    finally:
        for server in servers:
            server.close()
        for transport in transports:
            transport.close()


# -- the launcher ---------------------------------------------------------------------
#
# Starting a Python process per endpoint costs a tenth of a second of CPU each (the
# interpreter and asyncio), which is most of building a network. So the backend runs
# one launcher for its whole life, which has imported everything once and forks a
# server per endpoint: the child enters the endpoint's network namespace (setns(2),
# as `ip netns exec` does) and serves there. Every server is still its own process,
# in its own namespace, killed and reported one by one.

#: prctl(2)'s option to be sent a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: Seconds a server gets to end after SIGTERM before it is killed.
_STOP_GRACE = 3.0


def _say(line: str) -> None:
    """One line to the backend: a single write, so that lines of servers starting at
    once never interleave (pipe writes up to PIPE_BUF are atomic)."""
    try:
        os.write(1, (line.replace("\n", " ") + "\n").encode())
    except BrokenPipeError:
        # The harness is gone or no longer listening (it closes the pipe when it is
        # done): the launcher still stops and reaps its servers.
        pass


def _child(key: str, request: dict[str, Any]) -> None:
    """The server of one endpoint, in the forked child: never returns."""
    status = 0
    try:
        if not request.get("detached"):
            import ctypes

            # Ends with the launcher, which ends with the harness (its stdin closes).
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 2)
        enter_netns(request["netns"])

        def ready() -> None:
            _say(f"ready {key}")
            os.dup2(null, 1)  # nothing more to say: a kept server outlives the pipe

        asyncio.run(
            serve(
                request["identity"],
                list(request.get("tcp", [])),
                list(request.get("udp", [])),
                detached=True,
                dns=request.get("dns"),
                ready=ready,
            )
        )
    except BaseException as err:  # noqa: BLE001 - whatever it is, the backend must hear of it
        status = 1
        try:
            _say(f"failed {key} cannot serve {request.get('identity')}: {err}")
        except OSError:
            pass
    os._exit(status)


class _Launcher:
    """The launcher's state: one event loop over its standard input and a pidfd per
    server, so that requests are read and servers reaped as soon as either happens,
    and a server that ignores SIGTERM (a stopped one) is killed at its deadline."""

    def __init__(self, stdin: Any) -> None:
        import selectors

        self.stdin = stdin
        self.selector = selectors.DefaultSelector()
        self.selector.register(stdin, selectors.EVENT_READ, None)
        self.pids: dict[str, int] = {}
        self.pidfds: dict[str, int] = {}
        self.released: set[str] = set()
        #: Servers being stopped → when they are killed if still running.
        self.stopping: dict[str, float] = {}
        self.buffer = b""
        self.open = True

    def start(self, request: dict[str, Any]) -> None:
        import selectors

        key = str(request["key"])
        pid = os.fork()
        if pid == 0:
            self.selector.close()
            for fd in self.pidfds.values():
                os.close(fd)
            _child(key, request)
        self.pids[key] = pid
        self.pidfds[key] = os.pidfd_open(pid)
        self.selector.register(self.pidfds[key], selectors.EVENT_READ, key)
        _say(f"started {key} {pid}")

    def stop(self, keys: list[str], grace: float) -> None:
        import time

        for key in keys:
            if key in self.pids and key not in self.stopping:
                self.stopping[key] = time.monotonic() + grace
                signal.pidfd_send_signal(self.pidfds[key], signal.SIGTERM)

    def reap(self, key: str) -> None:
        _, status = os.waitpid(self.pids.pop(key), 0)
        fd = self.pidfds.pop(key)
        self.selector.unregister(fd)
        os.close(fd)
        stopped = self.stopping.pop(key, None) is not None
        _say(f"{'stopped' if stopped else 'exited'} {key} {os.waitstatus_to_exitcode(status)}")

    def handle(self, line: bytes) -> None:
        import json

        request = json.loads(line)
        op = request.get("op")
        if op == "start":
            self.start(request)
        elif op == "stop":
            self.stop([str(k) for k in request.get("keys", [])], float(request.get("grace", _STOP_GRACE)))
        elif op == "release":
            self.released.update(str(k) for k in request.get("keys", []))

    def run(self) -> None:
        import time

        while self.open or self.stopping:
            # Wake for the next kill deadline; servers already killed only wait for their pidfd.
            deadlines = [d for d in self.stopping.values() if d != float("inf")]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for selected, _ in self.selector.select(timeout):
                key = selected.data
                if key is not None:
                    self.reap(key)
                    continue
                chunk = os.read(self.stdin.fileno(), 65536)
                if not chunk:
                    # The harness ended (or closed us): stop every server it did not release.
                    self.open = False
                    self.selector.unregister(self.stdin)
                    self.stop([k for k in self.pids if k not in self.released], _STOP_GRACE)
                    continue
                self.buffer += chunk
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    if line.strip():
                        self.handle(line)
            now = time.monotonic()
            for key, deadline in list(self.stopping.items()):
                if deadline <= now and key in self.pidfds:
                    signal.pidfd_send_signal(self.pidfds[key], signal.SIGKILL)
                    self.stopping[key] = float("inf")  # killed: reaped when its pidfd says so


def launch(stdin: Any) -> int:
    """Read requests (JSON lines) and answer on standard output:

    * ``{"op": "start", "key": K, "netns", "identity", "tcp", "udp", "dns",
      "detached", "log"}``: fork the server; ``started K PID``, then the server's
      ``ready K`` or ``failed K MESSAGE``;
    * ``{"op": "stop", "keys": [...], "grace": S}``: SIGTERM those servers (SIGKILL
      after ``S`` seconds), and ``stopped K STATUS`` as each is reaped;
    * ``{"op": "release", "keys": [...]}``: leave those servers running when the
      launcher ends (a kept network);
    * a server that ends on its own: ``exited K STATUS``.

    STATUS is the exit status, negative for a signal. When standard input closes
    (the harness ended), every server not released is stopped and the launcher exits.
    """
    # Started with SIGINT and SIGTERM blocked (harness.core.spawn), in a session of
    # its own: a Ctrl-C that came while it was started is dropped, and its servers
    # can be stopped with SIGTERM again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import dnslib  # noqa: F401 - imported once here, not in every server
    except ImportError:
        pass
    _Launcher(stdin).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--launcher"]:
        return launch(sys.stdin)
    parser = argparse.ArgumentParser(description="Serve one emulated endpoint's ports.")
    parser.add_argument("--identity", required=True, help="what to answer with, e.g. x/a")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="a TCP port to serve over HTTP")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP port to answer datagrams on")
    parser.add_argument("--detached", action="store_true", help="serve until killed, not until standard input closes")
    parser.add_argument("--dns", metavar="RECORDS", help="also answer DNS on port 53 from this JSON file of names")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.identity, args.tcp, args.udp, args.detached, args.dns))
    except OSError as err:
        print(f"cannot serve {args.identity}: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
