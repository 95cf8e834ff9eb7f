"""Servers for the probe script tests, run inside the test's network namespace.

They answer as agnhost porter does: HTTP on TCP with the endpoint id as body, and
the endpoint id as the reply to any UDP datagram. Usage:
``python probe_servers.py`` — prints "ready" once every socket is bound, and exits
when its standard input closes (or after 120 s).
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

HOST = "127.0.0.1"
TCP_IDENTITY = {18080: b"x/a", 18083: b"y/b"}  # 18083 answers as the wrong endpoint
TCP_SILENT = 18084  # accepts, never answers
TCP_DROPPED = 18082  # listening, but the test's nftables rule drops its SYNs
UDP_IDENTITY = {18053: b"x/a"}
UDP_SILENT = 18054  # receives, never answers


def http_server(sock: socket.socket, body: bytes) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass


def silent_server(sock: socket.socket) -> None:
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)


def udp_server(sock: socket.socket, reply: bytes | None) -> None:
    while True:
        _, peer = sock.recvfrom(1024)
        if reply is not None:
            sock.sendto(reply, peer)


def main() -> None:
    threads: list[tuple[Any, ...]] = []
    for port, body in TCP_IDENTITY.items():
        threads.append((http_server, tcp(port), body))
    threads.append((silent_server, tcp(TCP_SILENT)))
    tcp(TCP_DROPPED)
    for port, reply in [*UDP_IDENTITY.items(), (UDP_SILENT, None)]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, port))
        threads.append((udp_server, sock, reply))
    for target, *args in threads:
        threading.Thread(target=target, args=args, daemon=True).start()
    print("ready", flush=True)
    done = threading.Event()

    def wait_for_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    done.wait(120)


_listeners: list[socket.socket] = []


def tcp(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(64)
    _listeners.append(sock)
    return sock


if __name__ == "__main__":
    main()
