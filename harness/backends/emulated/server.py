"""The process behind one emulated endpoint: serves all its ports and answers with
its identity (``x/a``), over HTTP on TCP ports and as a datagram on UDP ports.

Started inside the endpoint's network namespace::

    ip netns exec NS python -m harness.backends.emulated.server --identity x/a --tcp 80 --udp 80

It prints ``ready`` once every port is bound, and exits when its standard input
closes, so it never outlives the harness process that started it, even when that
one is killed; with ``--detached`` (a network kept after the session) it serves
until it is killed. Standard library only, so that it starts fast, except for the
cluster DNS pod: with ``--dns RECORDS``, port 53 also answers DNS queries (over UDP,
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
import sys
from collections.abc import Callable
from typing import cast

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
    identity: str, tcp_ports: list[int], udp_ports: list[int], detached: bool = False, dns: str | None = None
) -> None:
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
