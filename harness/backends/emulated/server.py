"""The process behind one emulated endpoint: serves all its ports and answers with
its identity (``x/a``), over HTTP on TCP ports and as a datagram on UDP ports.

Started inside the endpoint's network namespace::

    ip netns exec NS python -m harness.backends.emulated.server --identity x/a --tcp 80 --udp 80

It prints ``ready`` once every port is bound, and exits when its standard input
closes, so it never outlives the harness process that started it, even when that
one is killed; with ``--detached`` (a network kept after the session) it serves
until it is killed. Standard library only: it must start fast and import nothing
heavy.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import cast

#: How long a client may take to send its request head before it is answered anyway.
_REQUEST_WAIT = 5.0
_BACKLOG = 1024


def http_response(identity: str) -> bytes:
    body = identity.encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


class _DatagramResponder(asyncio.DatagramProtocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport implements DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.reply, addr)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def serve(identity: str, tcp_ports: list[int], udp_ports: list[int], detached: bool = False) -> None:
    response = http_response(identity)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            lambda: _DatagramResponder(identity.encode()), local_addr=("0.0.0.0", port)
        )
        transports.append(transport)
    print("ready", flush=True)
    try:
        if detached:
            await asyncio.Event().wait()  # until killed
        await _stdin_closed()
    finally:
        for server in servers:
            server.close()
        for transport in transports:
            transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve one emulated endpoint's ports.")
    parser.add_argument("--identity", required=True, help="what to answer with, e.g. x/a")
    parser.add_argument("--tcp", type=int, action="append", default=[], help="a TCP port to serve over HTTP")
    parser.add_argument("--udp", type=int, action="append", default=[], help="a UDP port to answer datagrams on")
    parser.add_argument("--detached", action="store_true", help="serve until killed, not until standard input closes")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.identity, args.tcp, args.udp, args.detached))
    except OSError as err:
        print(f"cannot serve {args.identity}: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
