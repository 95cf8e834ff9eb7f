"""Flushing the connection tracking table of a network namespace, over netlink.

A DNAT binding lives in its conntrack entry: a UDP probe from the same source port
to a Service reuses the entry (for two minutes once answered) and so the backend
of an earlier ruleset. kube-proxy deletes the conntrack entries of endpoints that
went away for the same reason (kubernetes/kubernetes pkg/proxy/conntrack, over
netlink); the emulated backend flushes the node's whole table with every ruleset it
loads, between probe rounds, when no probe is in flight.

The request is ctnetlink's ``IPCTNL_MSG_CT_DELETE`` without attributes (which
deletes every entry of the family: linux net/netfilter/nf_conntrack_netlink.c,
``ctnetlink_del_conntrack`` → ``ctnetlink_flush_conntrack``), acknowledged by the
kernel.
"""

from __future__ import annotations

import socket
import struct

from harness.backends.emulated.netns import call_in_netns
from harness.core.errors import BackendError

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_CTNETLINK = 1
_IPCTNL_MSG_CT_DELETE = 2
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")


def _flush_here() -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER) as sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        body = struct.pack("=BBH", socket.AF_INET, 0, 0)  # nfgenmsg: family, version, resource id
        kind = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_DELETE
        sock.send(_HEADER.pack(_HEADER.size + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0) + body)
        reply = sock.recv(4096)
    if len(reply) < _HEADER.size + 4:
        raise BackendError("flushing connection tracking: the kernel's answer is too short")
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    (error,) = struct.unpack_from("=i", reply, _HEADER.size)
    if kind != _NLMSG_ERROR or error not in (0, -2):  # -ENOENT: nothing to flush
        raise BackendError(f"flushing connection tracking failed: error {error}")


def flush_conntrack(netns: str) -> None:
    """Delete every IPv4 connection tracking entry of network namespace ``netns``."""
    try:
        call_in_netns(netns, _flush_here)
    except OSError as err:
        raise BackendError(f"cannot flush connection tracking in {netns}: {err.strerror or err}") from None
