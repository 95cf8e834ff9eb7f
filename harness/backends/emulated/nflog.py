"""Being told by the kernel of every packet a policy rule logs (NFLOG).

The compiled ruleset gives each pod chain's final ``drop`` and each policy rule
that admits a new flow a ``log group`` statement with a short prefix naming it. The
kernel's nfnetlink_log then sends a copy of each such packet's headers, with the
prefix, to the one netlink socket bound to that group in the packet's network
namespace: this module's. So the harness learns of a drop the moment it happens
(the packet is still dropped) and of the rule that admitted a flow.

The protocol is small: a config message binds the group and sets the copy mode,
then each logged packet arrives as one message carrying the prefix and the first
bytes of the IP packet. Message layouts and numbers are the kernel's UAPI:
``include/uapi/linux/netlink.h``, ``netfilter/nfnetlink.h`` and
``netfilter/nfnetlink_log.h`` (torvalds/linux, v6.x); the bind sequence is what
libnetfilter_log's ``nflog_bind_group`` sends. No Python library implements
NFLOG (pyroute2 covers rtnetlink, nftables and conntrack, not nfnetlink_log), so
the few bytes are built here, with the standard library's netlink sockets and the
basics of :mod:`harness.backends.emulated.netlink`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from harness.backends.emulated.netlink import (
    NETLINK_NETFILTER,
    NFGEN,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    attribute,
    attributes,
    message,
    messages,
    open_socket,
)
from harness.backends.emulated.netns import call_in_netns
from harness.core.errors import BackendError

_SO_RCVBUFFORCE = 33
#: Room for a burst of logged packets between two reads (a message is ~150 bytes).
RECEIVE_BUFFER = 8 << 20

_NFNL_SUBSYS_ULOG = 4
_NFULNL_MSG_PACKET, _NFULNL_MSG_CONFIG = 0, 1
_NFULA_PAYLOAD, _NFULA_PREFIX = 9, 10
_NFULA_CFG_CMD, _NFULA_CFG_MODE, _NFULA_CFG_TIMEOUT, _NFULA_CFG_QTHRESH = 1, 2, 4, 5
_NFULNL_CFG_CMD_BIND = 1
_NFULNL_COPY_PACKET = 2

#: Bytes of each packet copied: an IPv4 header without options and the ports.
COPY_RANGE = 64


@dataclass(frozen=True)
class LoggedPacket:
    """One packet a rule logged: its prefix and the header fields that tell which
    probe it belongs to."""

    prefix: str
    source: str
    destination: str
    protocol: int  # IP protocol number: 6 TCP, 17 UDP
    source_port: int
    destination_port: int


def _config_message(group: int, attributes: bytes, sequence: int) -> bytes:
    body = NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(group)) + attributes
    kind = (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_CONFIG
    return message(kind, NLM_F_REQUEST | NLM_F_ACK, sequence, body)


def parse_messages(data: bytes) -> tuple[list[LoggedPacket], list[int]]:
    """The logged packets and the error codes of acknowledgements in one netlink
    datagram (several messages may share one)."""
    packets: list[LoggedPacket] = []
    errors: list[int] = []
    for kind, _, _, start, end in messages(data):
        if kind == NLMSG_ERROR:
            if start + 4 <= end:
                (code,) = struct.unpack_from("=i", data, start)
                errors.append(-code)
        elif kind == (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_PACKET:
            packet = _packet(attributes(data, start + NFGEN.size, end))
            if packet is not None:
                packets.append(packet)
    return packets, errors


def _packet(attributes: dict[int, bytes]) -> LoggedPacket | None:
    payload = attributes.get(_NFULA_PAYLOAD, b"")
    if len(payload) < 20 or payload[0] >> 4 != 4:
        return None  # not IPv4: the emulated network has no other
    header = (payload[0] & 0x0F) * 4
    protocol = payload[9]
    ports = (0, 0)
    if len(payload) >= header + 4:
        ports = struct.unpack_from(">HH", payload, header)
    prefix = attributes.get(_NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace")
    return LoggedPacket(
        prefix,
        str(ipaddress.IPv4Address(payload[12:16])),
        str(ipaddress.IPv4Address(payload[16:20])),
        protocol,
        ports[0],
        ports[1],
    )


class LogSubscription:
    """The socket bound to one NFLOG group inside one network namespace."""

    def __init__(self, netns: str, group: int) -> None:
        self.netns = netns
        self.group = group
        #: True once the kernel reported that messages were lost (the socket's
        #: buffer overflowed): what was logged then is unknown.
        self.lost = False
        try:
            self.socket = call_in_netns(netns, self._open)
        except OSError as err:
            raise BackendError(f"cannot open an NFLOG socket in network namespace {netns}: {err.strerror or err}") from None
        try:
            self._configure()
        except BaseException:
            self.socket.close()
            raise

    @staticmethod
    def _open() -> socket.socket:
        sock = open_socket(NETLINK_NETFILTER)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except BaseException:
            sock.close()
            raise
        return sock

    def _configure(self) -> None:
        # Bind the group; copy the first bytes of each packet; deliver each message
        # at once (a queue threshold of one packet, no batching timeout).
        steps = (
            ("binding", attribute(_NFULA_CFG_CMD, bytes([_NFULNL_CFG_CMD_BIND]))),
            ("setting the copy mode", attribute(_NFULA_CFG_MODE, struct.pack(">IBB", COPY_RANGE, _NFULNL_COPY_PACKET, 0))),
            ("setting the queue threshold", attribute(_NFULA_CFG_QTHRESH, struct.pack(">I", 1))),
            ("setting the flush timeout", attribute(_NFULA_CFG_TIMEOUT, struct.pack(">I", 0))),
        )
        self.socket.settimeout(5.0)
        try:
            for sequence, (what, setting) in enumerate(steps, start=1):
                self.socket.send(_config_message(self.group, setting, sequence))
                code = self._acknowledgement()
                if code:
                    raise BackendError(
                        f"NFLOG group {self.group} in network namespace {self.netns}: {what} failed: {os.strerror(code)}"
                    )
        except OSError as err:
            raise BackendError(f"NFLOG group {self.group} in network namespace {self.netns}: {err.strerror or err}") from None
        finally:
            self.socket.setblocking(False)

    def _acknowledgement(self) -> int:
        while True:
            _, errors = parse_messages(self.socket.recv(65536))
            if errors:
                return errors[0]

    def fileno(self) -> int:
        return self.socket.fileno()

    def read(self) -> list[LoggedPacket]:
        """Every packet logged and not read yet (without waiting)."""
        packets: list[LoggedPacket] = []
        while True:
            try:
                data = self.socket.recv(1 << 16)
            except BlockingIOError:
                return packets
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    self.lost = True
                    continue
                raise
            packets.extend(parse_messages(data)[0])

    def close(self) -> None:
        self.socket.close()
