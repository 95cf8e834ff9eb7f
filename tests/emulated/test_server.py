"""The endpoint server (``harness.backends.emulated.server``), for real: its own
process in a network namespace each test creates, answering curl, netcat, dnslib
queries and raw sockets on the namespace's loopback.

Servers are started as a user starts one (``ip netns exec NS python -m
harness.backends.emulated.server ...``), or through ``serve()`` with a shorter
request wait, so that a client that sends nothing is answered without a
five-second wait. Every server is stopped (its standard input closed, killed if it
does not end) and the namespace removed when the test ends, whatever its outcome.
"""

from __future__ import annotations

import functools
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from harness.backends.emulated import missing_requirements
from harness.backends.emulated.netns import call_in_netns
from harness.backends.emulated.servers import server_environment

NEEDS = missing_requirements()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(bool(NEEDS), reason="the emulated backend needs: " + "; ".join(NEEDS)),
]

IDENTITY = "x/a"
HTTP_PORT, UDP_PORT, DNS_PORT = 8080, 8081, 53
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
SERVICE = "shop.x.svc.cluster.local"
#: Seconds a server gets to say ``ready``, and to end once its standard input closes.
READY_WAIT = 20.0
EXIT_WAIT = 10.0

#: serve() with every argument from a JSON file (an identity can be longer than a
#: command-line argument may be).
SERVE = (
    "import json, sys\n"
    "from harness.backends.emulated.server import serve\n"
    "a = json.load(open(sys.argv[1]))\n"
    "serve(a['identity'], a['tcp'], a['udp'], dns=a['dns'], request_wait=a['request_wait'])\n"
)


class Servers:
    """The servers a test started, each in the test's namespace with its standard
    input a pipe and its standard error a file."""

    def __init__(self, netns: str, directory: Path) -> None:
        self.netns = netns
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self.errors: list[IO[bytes]] = []

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, sys.executable, "-S", *args]

    def command(self, *args: str) -> subprocess.Popen[bytes]:
        """``python -m harness.backends.emulated.server ARGS``, once it is ready."""
        return self._ready(self.argv("-m", "harness.backends.emulated.server", *args))

    def serve(
        self,
        identity: str = IDENTITY,
        tcp: tuple[int, ...] = (HTTP_PORT,),
        udp: tuple[int, ...] = (),
        dns: Path | None = None,
        request_wait: float = 5.0,
    ) -> subprocess.Popen[bytes]:
        """``serve()`` with these arguments, once it is ready."""
        arguments = self.directory / f"serve-{len(self.processes)}.json"
        request = {"identity": identity, "tcp": list(tcp), "udp": list(udp), "dns": str(dns) if dns else None}
        arguments.write_text(json.dumps({**request, "request_wait": request_wait}))
        return self._ready(self.argv("-c", SERVE, str(arguments)))

    def _ready(self, argv: list[str]) -> subprocess.Popen[bytes]:
        errors = (self.directory / f"server-{len(self.processes)}.err").open("w+b")
        self.errors.append(errors)
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=server_environment())
        self.processes.append(process)
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], READY_WAIT)
        line = process.stdout.readline() if readable else b""
        errors.seek(0)
        assert line == b"ready\n", f"the server did not say ready ({line!r}): {errors.read().decode(errors='replace')}"
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
            try:
                process.wait(timeout=EXIT_WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        for errors in self.errors:
            errors.close()


@pytest.fixture
def servers(netns: str, tmp_path: Path) -> Iterator[Servers]:
    started = Servers(netns, tmp_path)
    try:
        yield started
    finally:
        started.stop()


def curl(netns: str, port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-q", "-sS", "--noproxy", "*", "-m", "5", *options, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=20,
    )


def netcat_udp(netns: str, port: int, datagram: str = "probe") -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nc", "-u", "-n", "-W", "1", "-w", "1", "127.0.0.1", str(port)],
        input=datagram,
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.stdout


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def read_all(conn: socket.socket) -> bytes:
    """What the server sends until it closes (a reset after its answer ends it too)."""
    received = b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def answered(reply: bytes, identity: str = IDENTITY) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    length = f"Content-Length: {len(identity)}".encode()
    return head.startswith(b"HTTP/1.1 200 OK\r\n") and length in head and body == identity.encode()


def test_curl_gets_the_identity_over_http(netns: str, servers: Servers) -> None:
    servers.command("--identity", IDENTITY, "--tcp", str(HTTP_PORT), "--tcp", "8090")
    for port in (HTTP_PORT, 8090):
        done = curl(netns, port, "-i")
        assert done.returncode == 0, done.stderr
        head, _, body = done.stdout.partition("\n\n")  # text: CRLF read as LF
        assert head.splitlines()[0] == "HTTP/1.1 200 OK" and "Content-Length: 3" in head and "Connection: close" in head
        assert body == IDENTITY


def test_a_head_sent_in_pieces_is_answered_once_its_blank_line_has_come(netns: str, servers: Servers) -> None:
    # A wait far longer than the test: the answer can only come from the blank line.
    servers.serve(request_wait=60.0)
    # The blank line itself split over three reads.
    pieces = [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r", b"\n", b"\r", b"\n"]

    def client() -> tuple[list[bool], bytes, float]:
        with connect(HTTP_PORT) as conn:
            early = []
            for piece in pieces[:-1]:
                conn.sendall(piece)
                readable, _, _ = select.select([conn], [], [], 0.3)
                early.append(bool(readable))  # an answer (or a close) before the head ended
            began = time.monotonic()
            conn.sendall(pieces[-1])
            reply = read_all(conn)
            return early, reply, time.monotonic() - began

    early, reply, took = call_in_netns(netns, client)
    assert early == [False, False, False]
    assert answered(reply) and took < 5.0


def test_a_client_that_sends_nothing_is_answered_after_the_request_wait(netns: str, servers: Servers, tmp_path: Path) -> None:
    records = tmp_path / "dns.json"
    records.write_text(json.dumps({SERVICE: "10.96.0.20"}))
    servers.serve(tcp=(HTTP_PORT, DNS_PORT), dns=records, request_wait=0.5)

    def client(port: int) -> tuple[bytes, float]:
        began = time.monotonic()
        with connect(port) as conn:
            return read_all(conn), time.monotonic() - began

    # On the DNS port too: nothing came, so it is no DNS message.
    for port in (HTTP_PORT, DNS_PORT):
        reply, took = call_in_netns(netns, functools.partial(client, port))
        assert answered(reply), port
        assert 0.4 < took < 4.0, (port, took)


def test_more_than_64_kib_of_head_without_a_blank_line_is_answered_and_the_server_goes_on(netns: str, servers: Servers) -> None:
    servers.serve(request_wait=60.0)

    def garbage() -> tuple[bytes, float]:
        with connect(HTTP_PORT) as conn:
            began = time.monotonic()
            conn.sendall(b"A" * (70 * 1024))
            return read_all(conn), time.monotonic() - began

    def flood() -> None:
        # Far more than the server reads: it answers and closes (resetting what is unread).
        with connect(HTTP_PORT) as conn:
            try:
                for _ in range(64):
                    conn.sendall(b"B" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass

    reply, took = call_in_netns(netns, garbage)
    assert answered(reply) and took < 5.0
    call_in_netns(netns, flood)
    done = curl(netns, HTTP_PORT)
    assert (done.returncode, done.stdout) == (0, IDENTITY), done.stderr


def test_a_client_that_resets_its_connection_leaves_the_server_serving(netns: str, servers: Servers) -> None:
    servers.serve(request_wait=60.0)

    def reset() -> None:
        conn = connect(HTTP_PORT)
        conn.sendall(b"GET / HTTP/1.1\r\n")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
        conn.close()  # linger 0: a reset

    call_in_netns(netns, reset)
    done = curl(netns, HTTP_PORT)
    assert (done.returncode, done.stdout) == (0, IDENTITY), done.stderr


def test_an_answer_too_long_for_one_send_is_written_whole(netns: str, servers: Servers) -> None:
    identity = "x/" + "a" * (4 * 1024 * 1024)
    servers.serve(identity=identity)

    def client() -> bytes:
        with connect(HTTP_PORT) as conn:
            conn.sendall(REQUEST)
            return read_all(conn)

    assert answered(call_in_netns(netns, client), identity)


def test_netcat_gets_the_identity_over_udp(netns: str, servers: Servers) -> None:
    servers.command("--identity", IDENTITY, "--udp", str(UDP_PORT), "--udp", "8091")
    assert netcat_udp(netns, UDP_PORT) == IDENTITY
    assert netcat_udp(netns, 8091) == IDENTITY


def dns_query(netns: str, name: str, qtype: str, over: str) -> DNSRecord:
    query = DNSRecord.question(name, qtype).pack()

    def udp() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(query, ("127.0.0.1", DNS_PORT))
            return sock.recv(65535)

    def tcp() -> bytes:
        with connect(DNS_PORT) as conn:
            conn.sendall(len(query).to_bytes(2, "big") + query)
            reply = read_all(conn)
        assert int.from_bytes(reply[:2], "big") == len(reply) - 2
        return reply[2:]

    return DNSRecord.parse(call_in_netns(netns, udp if over == "udp" else tcp))


@pytest.fixture
def dns_server(netns: str, servers: Servers, tmp_path: Path) -> Path:
    records = tmp_path / "dns.json"
    records.write_text(json.dumps({SERVICE: "10.96.0.20"}))
    servers.command("--identity", "kube-system/coredns", "--tcp", "53", "--udp", "53", "--dns", str(records))
    return records


@pytest.mark.parametrize("over", ["udp", "tcp"])
def test_dns_queries_are_answered_from_the_records_file(netns: str, dns_server: Path, over: str) -> None:
    found = dns_query(netns, SERVICE, "A", over)
    assert found.header.rcode == RCODE.NOERROR
    assert [(str(rr.rname), str(rr.rdata)) for rr in found.rr] == [(SERVICE + ".", "10.96.0.20")]
    assert found.rr[0].rtype == QTYPE.A
    no_data = dns_query(netns, SERVICE.upper(), "AAAA", over)
    assert (no_data.header.rcode, no_data.rr) == (RCODE.NOERROR, [])
    unknown = dns_query(netns, "nobody.x.svc.cluster.local", "A", over)
    assert (unknown.header.rcode, unknown.rr) == (RCODE.NXDOMAIN, [])
    # Rewritten (as at a converge): read again, its modification time having changed.
    dns_server.write_text(json.dumps({SERVICE: "10.96.0.21"}))
    later = os.stat(dns_server).st_mtime + 10
    os.utime(dns_server, (later, later))
    assert [str(rr.rdata) for rr in dns_query(netns, SERVICE, "A", over).rr] == ["10.96.0.21"]


def test_what_is_no_dns_message_on_port_53_gets_the_identity(netns: str, dns_server: Path) -> None:
    done = curl(netns, DNS_PORT)
    assert (done.returncode, done.stdout) == (0, "kube-system/coredns"), done.stderr
    assert netcat_udp(netns, DNS_PORT) == "kube-system/coredns"


def test_a_dns_message_cut_short_over_tcp_is_not_answered(netns: str, dns_server: Path) -> None:
    def client() -> bytes:
        with connect(DNS_PORT) as conn:
            conn.sendall((64).to_bytes(2, "big") + b"\x12\x34" + b"\x00" * 8)
            conn.shutdown(socket.SHUT_WR)
            return read_all(conn)

    assert call_in_netns(netns, client) == b""
    assert [str(rr.rdata) for rr in dns_query(netns, SERVICE, "A", "tcp").rr] == ["10.96.0.20"]


def test_two_hundred_connections_open_at_once_are_all_answered(netns: str, servers: Servers) -> None:
    servers.serve(request_wait=60.0)

    def clients() -> list[bytes]:
        conns = []
        try:
            # All open (and accepted: the handshake is done) before any sends its request.
            for _ in range(200):
                conns.append(connect(HTTP_PORT))
            for conn in conns:
                conn.sendall(REQUEST)
            return [read_all(conn) for conn in conns]
        finally:
            for conn in conns:
                conn.close()

    replies = call_in_netns(netns, clients)
    assert len(replies) == 200 and all(answered(reply) for reply in replies)


def test_on_its_own_with_standard_input_at_its_end_the_server_exits_at_once(netns: str, servers: Servers, tmp_path: Path) -> None:
    script = tmp_path / "input"
    script.write_text("anything\n")
    argv = servers.argv("-m", "harness.backends.emulated.server", "--identity", IDENTITY, "--tcp", str(HTTP_PORT))
    # /dev/null and a regular file: epoll cannot watch either; both are at their end once read.
    for stdin in (subprocess.DEVNULL, script.open("rb")):
        began = time.monotonic()
        done = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=EXIT_WAIT, env=server_environment())
        assert (done.returncode, done.stdout, done.stderr) == (0, b"ready\n", b"")
        assert time.monotonic() - began < 5.0


def test_on_its_own_the_server_serves_until_its_standard_input_closes(netns: str, servers: Servers) -> None:
    process = servers.command("--identity", IDENTITY, "--tcp", str(HTTP_PORT), "--udp", str(UDP_PORT))
    assert process.stdin is not None
    process.stdin.write(b"what it reads is ignored\n")
    process.stdin.flush()
    done = curl(netns, HTTP_PORT)
    assert (done.returncode, done.stdout) == (0, IDENTITY), done.stderr
    process.stdin.close()
    assert process.wait(timeout=EXIT_WAIT) == 0
    assert curl(netns, HTTP_PORT).returncode == 7  # nothing listens any more: refused


def test_a_port_already_taken_is_reported_by_name_and_the_server_exits_1(netns: str, servers: Servers) -> None:
    servers.command("--identity", IDENTITY, "--tcp", str(HTTP_PORT))
    argv = servers.argv("-m", "harness.backends.emulated.server", "--identity", "x/b", "--udp", "8082", "--tcp", str(HTTP_PORT))
    env = server_environment()
    done = subprocess.run(argv, stdin=subprocess.PIPE, capture_output=True, text=True, timeout=EXIT_WAIT, env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"cannot serve x/b: [Errno 98] cannot bind {HTTP_PORT}/TCP: Address already in use\n"
