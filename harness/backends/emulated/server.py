"""The process behind one emulated endpoint: serves all its ports and answers with
its identity (``x/a``), over HTTP on TCP ports and as a datagram on UDP ports.

The backend forks these servers from one launcher process (``--launcher``, below),
each entering its endpoint's network namespace. One can also be started on its own,
inside the endpoint's namespace::

    ip netns exec NS python -m harness.backends.emulated.server --identity x/a --tcp 80 --udp 80

It then prints ``ready`` once every port is bound, and exits when its standard
input closes (at once when that is /dev/null or a file, read to its end); with
``--detached`` it serves until it is killed. For the cluster DNS
pod, with ``--dns RECORDS``, port 53 also answers DNS queries (over UDP,
and over TCP with its two-byte length prefix) from the records file, a JSON mapping
of names to IPv4 addresses the harness rewrites when the Services change (the
server reads it again when its modification time changes). Its DNS messages are
read and written with dnslib. Anything on 53 that is not a DNS query (a probe's
datagram, an HTTP request) is answered with the identity, like any other port.

A server is one loop over a selector (epoll) and non-blocking sockets, without
asyncio: a run of the scenario library forks hundreds of servers and answers
thousands of connections while its probes keep both cores busy, so the servers'
CPU is wall time. An asyncio loop cost about 3 ms of CPU to start a server (the
loop, a server per port) and 0.17 ms per connection (stream reader and writer,
a task per timeout); this loop about 1.4 ms to start, most of it the fork itself,
and 0.03 to 0.05 ms per connection. A connection is answered once its request
head has come (its blank line), its client has closed its side, 64 KiB of head
have come, or it has waited 5 seconds; deadlines all being the same wait, they
are kept in the order accepted.
"""

from __future__ import annotations

import argparse
import enum
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from harness.backends.emulated.netns import enter_netns, libc

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


class _Phase(enum.Enum):
    """Where an accepted connection is."""

    #: Reading an HTTP request head, up to its blank line.
    HEAD = "head"
    #: On the DNS port: reading the first two bytes (a DNS length, or an HTTP method's).
    DNS_LENGTH = "dns-length"
    #: Reading a DNS message of the length read.
    DNS_MESSAGE = "dns-message"
    #: Writing the answer (what the first send did not take).
    WRITE = "write"


class _Connection:
    """One accepted TCP connection. Of an HTTP head it keeps only how much was read
    and its last three bytes (to find a blank line split between reads); a DNS
    message (at most 65,535 bytes) is kept whole."""

    __slots__ = ("sock", "phase", "deadline", "seen", "tail", "buffer", "length", "out", "registered", "closed")

    out: bytes | memoryview

    def __init__(self, sock: socket.socket, phase: _Phase, deadline: float) -> None:
        self.sock = sock
        self.phase = phase
        self.deadline = deadline
        self.seen = 0
        self.tail = b""
        self.buffer = b""
        self.length = 0
        self.out = b""
        #: In the selector (not when answered straight after it was accepted).
        self.registered = False
        self.closed = False


#: Where an HTTP request head ends.
_HEAD_END = b"\r\n\r\n"
#: Bytes of request head read at most before answering anyway (memory stays bounded).
_HEAD_LIMIT = 64 * 1024
#: Bytes asked of one recv.
_CHUNK = 16 * 1024
#: Datagrams answered per readiness of a UDP socket, so that a flood on one port
#: cannot starve the others (the socket stays readable: the rest come next turn).
_DATAGRAMS_PER_TURN = 256
#: Seconds before accepting again after running out of descriptors or memory.
_ACCEPT_RETRY = 0.5
#: accept(2) errors that say this process or the system is out of a resource.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _EndpointServer:
    """The state of :func:`serve`: one selector over the listening TCP sockets, the
    accepted connections, the UDP sockets and (unless detached) standard input."""

    def __init__(self, identity: str, records: DnsRecords | None, request_wait: float) -> None:
        self.identity = identity.encode()
        self.response = http_response(identity)
        self.records = records
        self.request_wait = request_wait
        self.selector = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        #: Each listening socket, and whether it is the DNS port of a DNS server.
        self.accepting: list[tuple[socket.socket, bool]] = []
        self.datagram_sockets: list[socket.socket] = []
        #: (deadline, connection), in the order accepted: every connection waits the
        #: same time, so the front is always the nearest deadline. An entry whose
        #: connection has closed or moved its deadline is skipped.
        self.deadlines: deque[tuple[float, _Connection]] = deque()
        self.connections: set[_Connection] = set()
        #: When accepting paused for lack of resources: when it is tried again.
        self.accept_paused_until: float | None = None
        self.stopped = False

    # -- setting up ----------------------------------------------------------------

    def bind(self, tcp_ports: list[int], udp_ports: list[int]) -> None:
        for port in tcp_ports:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(listener, port, "TCP")
            listener.listen(_BACKLOG)
            listener.setblocking(False)
            self.accepting.append((listener, self.records is not None and port == DNS_PORT))
        self._resume_accepting()
        for port in udp_ports:
            datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.datagram_sockets.append(datagrams)
            _bind(datagrams, port, "UDP")
            datagrams.setblocking(False)
            records = self.records if port == DNS_PORT else None
            self.selector.register(datagrams, selectors.EVENT_READ, (self._datagrams, (datagrams, records)))

    def watch_stdin(self) -> bool:
        """Watch standard input for its end; False when it has already ended. A file
        epoll cannot watch (a regular file, /dev/null: EPERM) is read to its end
        here, which comes at once."""
        try:
            self.selector.register(0, selectors.EVENT_READ, (self._stdin, None))
            return True
        except PermissionError:
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            return False
        except (OSError, ValueError):
            return False  # no standard input at all (fd 0 closed)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        select = self.selector.select
        while not self.stopped:
            for key, _ in select(self._timeout()):
                handler, target = key.data
                handler(target)
            if self.deadlines and self.deadlines[0][0] <= time.monotonic():
                self._expire()
            if self.accept_paused_until is not None and self.accept_paused_until <= time.monotonic():
                self._resume_accepting()

    def _timeout(self) -> float | None:
        deadlines = self.deadlines
        while deadlines and (deadlines[0][1].closed or deadlines[0][1].deadline != deadlines[0][0]):
            deadlines.popleft()
        nearest = deadlines[0][0] if deadlines else None
        if self.accept_paused_until is not None:
            nearest = self.accept_paused_until if nearest is None else min(nearest, self.accept_paused_until)
        return None if nearest is None else max(0.0, nearest - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, conn = deadlines.popleft()
            if conn.closed or conn.deadline != deadline:
                continue
            if conn.phase is _Phase.HEAD or conn.phase is _Phase.DNS_LENGTH:
                self._answer(conn, self.response)  # nothing (whole) came: answered anyway
            else:
                self._close(conn)  # a DNS message cut short, or a client that does not read

    # -- TCP -----------------------------------------------------------------------

    def _accept(self, target: tuple[socket.socket, bool]) -> None:
        if self.accept_paused_until is not None:
            return  # paused earlier in the same turn
        listener, dns = target
        while True:
            try:
                sock, _address = listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue  # reset before it was accepted
            except OSError as err:
                if err.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(err)
                return  # another pending network error: the next readiness tries again
            sock.setblocking(False)
            deadline = time.monotonic() + self.request_wait
            conn = _Connection(sock, _Phase.DNS_LENGTH if dns else _Phase.HEAD, deadline)
            self.connections.add(conn)
            # The request is often in already: answered without waiting for readiness.
            self._on_connection(conn)
            if not conn.closed and not conn.registered:
                self.selector.register(sock, selectors.EVENT_READ, (self._on_connection, conn))
                conn.registered = True
                self.deadlines.append((deadline, conn))

    def _on_connection(self, conn: _Connection) -> None:
        if conn.closed:
            return  # closed earlier in the same turn
        if conn.phase is _Phase.WRITE:
            self._write(conn)
            return
        try:
            chunk = conn.sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)  # reset, or another error of this connection
            return
        if conn.phase is _Phase.HEAD:
            self._take_head(conn, chunk)
        elif conn.phase is _Phase.DNS_LENGTH:
            self._take_dns_length(conn, chunk)
        else:
            self._take_dns_message(conn, chunk)

    def _take_head(self, conn: _Connection, chunk: bytes) -> None:
        # The head is read first and only then answered: closing with unread data
        # would make the kernel reset the connection before the client reads the answer.
        window = conn.tail + chunk
        conn.seen += len(chunk)
        if not chunk or _HEAD_END in window or conn.seen > _HEAD_LIMIT:
            self._answer(conn, self.response)
        else:
            conn.tail = window[-3:]

    def _take_dns_length(self, conn: _Connection, chunk: bytes) -> None:
        # DNS over TCP: each message after its two-byte length (RFC 1035, 4.2.2);
        # two letters are the start of an HTTP method (a probe or the health check).
        if not chunk:
            self._answer(conn, self.response)  # ended before two bytes: not DNS
            return
        buffer = conn.buffer + chunk
        if len(buffer) < 2:
            conn.buffer = buffer
        elif buffer[:2].isalpha():
            conn.buffer = b""
            conn.phase = _Phase.HEAD
            self._take_head(conn, buffer)
        else:
            conn.phase = _Phase.DNS_MESSAGE
            conn.length = int.from_bytes(buffer[:2], "big")
            conn.buffer = buffer[2:]
            self._answer_dns(conn)

    def _take_dns_message(self, conn: _Connection, chunk: bytes) -> None:
        if not chunk:
            self._close(conn)  # ended before the whole message came
            return
        conn.buffer += chunk
        self._answer_dns(conn)

    def _answer_dns(self, conn: _Connection) -> None:
        """Answer the DNS message once all of it has come (a query dnslib cannot
        read, or that is no query, is not answered)."""
        assert self.records is not None
        if len(conn.buffer) < conn.length:
            return
        reply = dns_answer(conn.buffer[: conn.length], self.records)
        conn.buffer = b""
        if reply is None:
            self._close(conn)
        else:
            self._answer(conn, len(reply).to_bytes(2, "big") + reply)

    def _answer(self, conn: _Connection, answer: bytes) -> None:
        conn.phase = _Phase.WRITE
        conn.out = answer
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent == len(conn.out):
            self._close(conn)
            return
        # Normally the whole answer goes in one send; the rest waits for room, for
        # at most another request wait (appended last, it is still the latest deadline).
        conn.out = memoryview(conn.out)[sent:]  # no copy of a long rest
        conn.deadline = time.monotonic() + self.request_wait
        self.deadlines.append((conn.deadline, conn))
        if conn.registered:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, (self._on_connection, conn))
        else:
            self.selector.register(conn.sock, selectors.EVENT_WRITE, (self._on_connection, conn))
            conn.registered = True

    def _close(self, conn: _Connection) -> None:
        conn.closed = True
        self.connections.discard(conn)
        if conn.registered:
            self.selector.unregister(conn.sock)
        conn.sock.close()
        conn.buffer = conn.out = b""
        if self.accept_paused_until is not None:
            self._resume_accepting()  # a descriptor is free again

    def _pause_accepting(self, err: OSError) -> None:
        print(f"cannot accept: {err.strerror or err}; trying again in {_ACCEPT_RETRY} s", file=sys.stderr, flush=True)
        for listener in self.listeners:
            self.selector.unregister(listener)
        self.accept_paused_until = time.monotonic() + _ACCEPT_RETRY

    def _resume_accepting(self) -> None:
        self.accept_paused_until = None
        for target in self.accepting:
            self.selector.register(target[0], selectors.EVENT_READ, (self._accept, target))

    # -- UDP and standard input ----------------------------------------------------

    def _datagrams(self, target: tuple[socket.socket, DnsRecords | None]) -> None:
        datagrams, records = target
        for _turn in range(_DATAGRAMS_PER_TURN):
            try:
                data, address = datagrams.recvfrom(65535)
            except OSError:
                return  # BlockingIOError: none left
            answer = dns_answer(data, records) if records is not None else None
            try:
                datagrams.sendto(answer if answer is not None else self.identity, address)
            except OSError:
                pass  # no room in the send buffer, or the sender is unreachable: a lost datagram

    def _stdin(self, _: None) -> None:
        try:
            if os.read(0, 65536):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.stopped = True

    def close(self) -> None:
        self.accept_paused_until = None
        for conn in list(self.connections):
            self._close(conn)
        for sock in self.listeners + self.datagram_sockets:
            sock.close()
        self.selector.close()


def _bind(sock: socket.socket, port: int, protocol: str) -> None:
    try:
        sock.bind(("0.0.0.0", port))
    except OSError as err:
        raise OSError(err.errno, f"cannot bind {port}/{protocol}: {err.strerror}") from None


def _say_ready() -> None:
    print("ready", flush=True)


def serve(
    identity: str,
    tcp_ports: list[int],
    udp_ports: list[int],
    detached: bool = False,
    dns: str | None = None,
    ready: Callable[[], None] | None = None,
    *,
    request_wait: float = _REQUEST_WAIT,
) -> None:
    """Serve until standard input closes, or with ``detached`` until killed;
    ``ready`` is called once every port is bound (by default: print ``ready``).
    A client gets ``request_wait`` seconds to send its request before it is
    answered anyway. A port that cannot be bound raises OSError."""
    server = _EndpointServer(identity, DnsRecords(dns) if dns else None, request_wait)
    try:
        server.bind(tcp_ports, udp_ports)
        (ready or _say_ready)()
        if detached or server.watch_stdin():
            server.run()
    finally:
        server.close()


# -- the launcher ---------------------------------------------------------------------
#
# Starting a Python process per endpoint costs a tenth of a second of CPU each (the
# interpreter and its imports), which is most of building a network. So the backend runs
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
            # Ends with the launcher, which ends with the harness (its stdin closes).
            libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 2)
        enter_netns(request["netns"])

        def ready() -> None:
            # With its pid: this can come before the launcher's "started" line.
            _say(f"ready {key} {os.getpid()}")
            os.dup2(null, 1)  # nothing more to say: a kept server outlives the pipe

        serve(
            request["identity"],
            list(request.get("tcp", [])),
            list(request.get("udp", [])),
            detached=True,
            dns=request.get("dns"),
            ready=ready,
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
      "detached", "log"}``: fork the server; ``started K PID``, and the server's
      ``ready K PID`` (which may come first) or ``failed K MESSAGE``;
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
    # The C library and the two functions each server calls, looked up once here
    # (ctypes keeps a function on the library once looked up), not in every server.
    for function in ("setns", "prctl"):
        getattr(libc(), function)
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
        serve(args.identity, args.tcp, args.udp, args.detached, args.dns)
    except OSError as err:
        print(f"cannot serve {args.identity}: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
