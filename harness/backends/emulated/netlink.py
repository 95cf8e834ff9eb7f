"""Asking the kernel of one network namespace, over netlink, what the backend would
otherwise start a process for before every probe round.

Three requests, each a few bytes, on sockets opened once inside the namespace
(a socket keeps the namespace it was created in):

* the nftables generation (``NFT_MSG_GETGEN``): a counter the kernel moves on with
  every committed nftables transaction in the namespace (linux
  net/netfilter/nf_tables_api.c, ``nf_tables_fill_gen_info`` answers with
  ``base_seq``, which each commit increments), so an unchanged generation means an
  unchanged ruleset, with no listing to compare;
* every link's name and operational state (``RTM_GETLINK`` dump, the request
  behind ``ip link show``), the states named as ``ip`` names them (linux
  include/uapi/linux/if.h, ``IF_OPER_*``);
* flushing connection tracking (``IPCTNL_MSG_CT_DELETE`` without attributes
  deletes every entry of the family: net/netfilter/nf_conntrack_netlink.c,
  ``ctnetlink_del_conntrack`` → ``ctnetlink_flush_conntrack``). A DNAT binding
  lives in its conntrack entry: a UDP probe from the same source port to a
  Service reuses the entry (for two minutes once answered) and so the backend of
  an earlier ruleset. kube-proxy deletes the conntrack entries of endpoints that
  went away for the same reason (kubernetes/kubernetes pkg/proxy/conntrack, over
  netlink); the emulated backend flushes the node's whole table with every
  ruleset it loads, between probe rounds, when no probe is in flight.

Message layouts and numbers are the kernel's UAPI (include/uapi/linux/netlink.h,
rtnetlink.h, netfilter/nfnetlink.h, netfilter/nf_tables.h, v6.x). pyroute2 speaks
these too, but its sockets for another namespace are made by a helper process
(about 10 ms per namespace on a 2-core machine, more than the check saves over a
scenario) and a socket it opens from a thread that entered a namespace is not
bound there, so the few bytes are built here, as :mod:`~harness.backends.emulated.nflog`
builds its own.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

from harness.backends.emulated.netns import call_in_netns
from harness.core.errors import BackendError

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
_NLM_F_DUMP_INTR = 0x10
#: The attribute type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
NLA_TYPE_MASK = 0x3FFF

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
NFGEN = struct.Struct("=BBH")  # struct nfgenmsg (res_id in network order)
ATTR = struct.Struct("=HH")  # struct nlattr
_IFINFO = struct.Struct("=BBHiII")  # struct ifinfomsg
_ERROR = struct.Struct("=i")

_NFNL_SUBSYS_CTNETLINK = 1
_NFNL_SUBSYS_NFTABLES = 10
_IPCTNL_MSG_CT_DELETE = 2
_NFT_MSG_NEWGEN, _NFT_MSG_GETGEN = 15, 16
_NFTA_GEN_ID = 1
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_IFLA_IFNAME, _IFLA_OPERSTATE, _IFLA_EXT_MASK = 3, 16, 29
_RTEXT_FILTER_SKIP_STATS = 1 << 3
#: ``IF_OPER_*`` by number, as ``ip`` prints them.
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
#: Seconds the kernel may take to answer one request.
ANSWER_WAIT = 5.0
#: Dumps interrupted by a concurrent change (NLM_F_DUMP_INTR) tried again at most.
_DUMP_TRIES = 3


def attribute(kind: int, payload: bytes) -> bytes:
    length = ATTR.size + len(payload)
    return ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def attributes(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """The attributes between ``start`` and ``end`` by type (the last of a type wins)."""
    found: dict[int, bytes] = {}
    while start + ATTR.size <= end:
        length, kind = ATTR.unpack_from(data, start)
        if length < ATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[start + ATTR.size : start + length]
        start += (length + 3) & ~3
    return found


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, sequence, payload start, end) of each message in one datagram."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, sequence, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return
        yield kind, flags, sequence, offset + HEADER.size, min(offset + length, len(data))
        offset += (length + 3) & ~3


def message(kind: int, flags: int, sequence: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), kind, flags, sequence, 0) + body


def open_socket(protocol: int) -> socket.socket:
    """A netlink socket of ``protocol`` in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        sock.bind((0, 0))
        sock.settimeout(ANSWER_WAIT)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_pair() -> tuple[socket.socket, socket.socket]:
    """A netfilter and a route socket in the calling thread's namespace (neither
    left open when the other cannot be opened)."""
    netfilter = open_socket(NETLINK_NETFILTER)
    try:
        return netfilter, open_socket(NETLINK_ROUTE)
    except BaseException:
        netfilter.close()
        raise


class NamespaceNetlink:
    """The netlink sockets of one network namespace, opened once."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._sequence = 0
        try:
            self._netfilter, self._route = call_in_netns(netns, _open_pair)
        except OSError as err:
            raise BackendError(f"cannot open netlink sockets in network namespace {netns}: {err.strerror or err}") from None

    def close(self) -> None:
        self._netfilter.close()
        self._route.close()

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def _ask(self, sock: socket.socket, request: bytes, sequence: int, what: str) -> Iterator[tuple[bytes, int, int, int]]:
        """Send ``request`` and yield (datagram, type, payload start, end) of each
        answer to it until the kernel is done (an error raises)."""
        try:
            sock.send(request)
            while True:
                data = sock.recv(1 << 16)
                for kind, flags, seq, start, end in messages(data):
                    if seq != sequence:
                        continue  # the answer to an earlier request that timed out
                    if kind == NLMSG_ERROR:
                        (code,) = _ERROR.unpack_from(data, start)
                        if code:
                            raise KernelRefused(-code, f"{what} in network namespace {self.netns} failed: {os.strerror(-code)}")
                        return
                    if kind == NLMSG_DONE:
                        if flags & _NLM_F_DUMP_INTR:
                            raise _Interrupted
                        return
                    yield data, kind, start, end
                    if not flags & NLM_F_MULTI:  # a single answer ends here
                        return
        except TimeoutError:
            raise BackendError(
                f"{what} in network namespace {self.netns}: the kernel did not answer within {ANSWER_WAIT:g}s"
            ) from None
        except OSError as err:
            raise BackendError(f"{what} in network namespace {self.netns} failed: {err.strerror or err}") from None

    def nftables_generation(self) -> int:
        """The namespace's nftables generation, which every committed transaction moves on."""
        sequence = self._next()
        kind = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETGEN
        request = message(kind, NLM_F_REQUEST, sequence, NFGEN.pack(socket.AF_UNSPEC, 0, 0))
        for data, answer, start, end in self._ask(self._netfilter, request, sequence, "asking for the nftables generation"):
            if answer == (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_NEWGEN:
                found = attributes(data, start + NFGEN.size, end).get(_NFTA_GEN_ID)
                if found is not None and len(found) == 4:
                    return int(struct.unpack(">I", found)[0])
        raise BackendError(f"asking for the nftables generation in network namespace {self.netns}: no generation in the answer")

    def link_states(self) -> dict[str, str]:
        """Every link's name → its operational state (``UP``, ``DOWN``, ...)."""
        for _ in range(_DUMP_TRIES):
            try:
                return self._link_dump()
            except _Interrupted:
                continue  # links changed while they were dumped: ask again
        raise BackendError(f"listing the links of network namespace {self.netns}: they kept changing while listed")

    def _link_dump(self) -> dict[str, str]:
        sequence = self._next()
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0) + attribute(
            _IFLA_EXT_MASK, struct.pack("=I", _RTEXT_FILTER_SKIP_STATS)
        )
        request = message(_RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, sequence, body)
        states: dict[str, str] = {}
        for data, kind, start, end in self._ask(self._route, request, sequence, "listing the links"):
            if kind != _RTM_NEWLINK:
                continue
            found = attributes(data, start + _IFINFO.size, end)
            name = found.get(_IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
            state = found.get(_IFLA_OPERSTATE, b"\0")[0]
            states[name] = OPERSTATES[state] if state < len(OPERSTATES) else str(state)
        return states

    def flush_conntrack(self) -> None:
        """Delete every IPv4 connection tracking entry of the namespace."""
        sequence = self._next()
        kind = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_DELETE
        request = message(kind, NLM_F_REQUEST | NLM_F_ACK, sequence, NFGEN.pack(socket.AF_INET, 0, 0))
        try:
            for _ in self._ask(self._netfilter, request, sequence, "flushing connection tracking"):
                pass
        except KernelRefused as err:
            if err.code != errno.ENOENT:  # ENOENT: there was nothing to flush
                raise


class KernelRefused(BackendError):
    """The kernel answered a request with an error (``code``: its errno)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Interrupted(Exception):
    """A dump the kernel marked inconsistent: something changed while it was sent."""
