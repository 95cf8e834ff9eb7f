"""Checking the emulated network before a verdict is trusted.

A server killed from outside, a link set down or the nftables table deleted would
otherwise read as "refused", "blocked" or "allowed" under the policies in force.
Before each probe round the backend checks, and a finding makes the step an error
(:class:`harness.core.errors.BackendError`) and the deployment unfit for reuse:

* the ruleset in force is the one loaded: each load echoes what the kernel
  created (``nft --echo``), which is checked against the rendered script, chain
  by chain and rule by rule (their comments and log prefixes), and the
  namespace's nftables generation is recorded; before a round the generation must
  be the same, which it is only while no transaction at all has been committed
  there since (:mod:`harness.backends.emulated.netlink`);
* every endpoint's link is up: each node-side veth is operationally up, which a
  veth is only while both its ends are;
* every server answers: from the node namespace (whose own traffic no policy
  filters), one HTTP request to a TCP port and one datagram to a UDP port of each
  server, each answered with the endpoint's identity.
"""

from __future__ import annotations

import errno
import re
import selectors
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tenacity import RetryError, Retrying, retry_if_result, stop_after_attempt, wait_fixed

from harness.backends.emulated.netns import call_in_netns
from harness.backends.emulated.system import run
from harness.core.errors import BackendError
from harness.core.topology import Protocol

#: Seconds one round of server checks may take.
CHECK_TIMEOUT = 2.0
#: Rounds of server checks before an endpoint that does not answer is reported.
CHECK_ATTEMPTS = 3
#: Server checks in flight at once (two file descriptors each at most).
CHECK_CONCURRENCY = 256

_CHAIN = re.compile(r"^\s*chain (?P<name>\S+) \{$")
#: What ``nft --echo`` prints for a chain or a rule it created.
_ECHOED = re.compile(r"^add (?P<what>chain|rule) inet (?P<table>\S+) (?P<chain>\S+)(?P<rest>.*)$")
_MARKS = re.compile(r'(?:comment|prefix) "(?P<text>[^"]*)"')


def list_table(netns: str, table: str) -> str | None:
    """``nft list table inet TABLE`` inside ``netns``; None when it does not exist."""
    try:
        return run(["nft", "list", "table", "inet", table], "listing the nftables table", netns=netns)
    except BackendError as err:
        if "No such file or directory" in str(err):
            return None
        raise


def rule_marks(script: str) -> dict[str, list[tuple[str, ...]]]:
    """Chain name → its rules, each as the comments and log prefixes it carries:
    what a listing keeps of a rendered script, whatever nft's own formatting."""
    chains: dict[str, list[tuple[str, ...]]] = {}
    current: list[tuple[str, ...]] | None = None
    for line in script.splitlines():
        header = _CHAIN.match(line)
        if header:
            current = chains.setdefault(header["name"], [])
            continue
        text = line.strip()
        if current is None or not text or text == "}" or text.startswith(("type ", "policy ")):
            if text == "}":
                current = None
            continue
        current.append(tuple(m["text"] for m in _MARKS.finditer(text)))
    return chains


def echoed_marks(echo: str, table: str) -> dict[str, list[tuple[str, ...]]]:
    """Chain name → its rules' marks, from what ``nft --echo`` printed while
    loading a script into ``table``: the chains and rules the kernel created, in
    the order it created them."""
    chains: dict[str, list[tuple[str, ...]]] = {}
    for line in echo.splitlines():
        found = _ECHOED.match(line.strip())
        if found is None or found["table"] != table:
            continue
        rules = chains.setdefault(found["chain"], [])
        if found["what"] == "rule":
            rules.append(tuple(m["text"] for m in _MARKS.finditer(found["rest"])))
    return chains


def listing_problems(table: str, where: str, rendered: str, listing: str | None) -> list[str]:
    """How the listing of a table just loaded differs from the script rendered for it."""
    if listing is None:
        return [f"the nftables table {table} is missing from {where}"]
    return marks_problems(table, where, rule_marks(rendered), rule_marks(listing))


def echo_problems(table: str, where: str, rendered: str, echo: str) -> list[str]:
    """How what the kernel created while loading a script differs from the script."""
    have = echoed_marks(echo, table)
    if not have:
        return [f"the nftables table {table} is missing from {where}"]
    return marks_problems(table, where, rule_marks(rendered), have)


def marks_problems(
    table: str, where: str, want: dict[str, list[tuple[str, ...]]], have: dict[str, list[tuple[str, ...]]]
) -> list[str]:
    problems = []
    for chain, rules in want.items():
        if chain not in have:
            problems.append(f"chain {chain} of table {table} is missing from {where}")
        elif have[chain] != rules:
            problems.append(
                f"chain {chain} of table {table} in {where} holds {len(have[chain])} rule(s), not the {len(rules)} loaded"
            )
    problems += [f"table {table} in {where} has a chain {chain} that was not loaded" for chain in have if chain not in want]
    return problems


def link_problems(states: Mapping[str, str], interfaces: Mapping[str, str]) -> list[str]:
    """Endpoints whose veth (``interfaces``: endpoint id → node-side veth) is not
    up, from the node namespace's links (``states``: name → operational state)."""
    problems = []
    for endpoint, veth in interfaces.items():
        state = states.get(veth)
        if state is None:
            problems.append(f"the link of {endpoint} ({veth} in the node namespace) is gone")
        elif state != "UP":
            problems.append(f"the link of {endpoint} is {state.lower()}, not up")
    return problems


@dataclass(frozen=True)
class ServerCheck:
    """One request to one server port: it must answer with ``identity``."""

    endpoint: str
    address: str
    port: int
    protocol: Protocol

    @property
    def identity(self) -> str:
        return self.endpoint


def _check_all(checks: Sequence[ServerCheck], timeout: float) -> dict[ServerCheck, str]:
    """Run ``checks`` at once (from the calling thread's network namespace); what
    went wrong with each that failed."""
    failures: dict[ServerCheck, str] = {}
    for start in range(0, len(checks), CHECK_CONCURRENCY):
        failures.update(_check_batch(checks[start : start + CHECK_CONCURRENCY], timeout))
    return failures


def _check_batch(checks: Sequence[ServerCheck], timeout: float) -> dict[ServerCheck, str]:
    selector = selectors.DefaultSelector()
    answers: dict[ServerCheck, bytearray] = {}
    failures: dict[ServerCheck, str] = {}
    open_sockets: dict[ServerCheck, socket.socket] = {}
    try:
        for check in checks:
            kind = socket.SOCK_STREAM if check.protocol is Protocol.TCP else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            open_sockets[check] = sock
            answers[check] = bytearray()
            code = sock.connect_ex((check.address, check.port))
            if check.protocol is Protocol.UDP:
                sock.send(b"health\n")
                selector.register(sock, selectors.EVENT_READ, check)
            elif code in (0, errno.EINPROGRESS):
                selector.register(sock, selectors.EVENT_WRITE, check)
            else:
                failures[check] = errno.errorcode.get(code, str(code))
        ends = time.monotonic() + timeout
        while selector.get_map() and (left := ends - time.monotonic()) > 0:
            for key, mask in selector.select(left):
                check = key.data
                sock = open_sockets[check]
                try:
                    if mask & selectors.EVENT_WRITE:
                        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if error:
                            raise OSError(error, errno.errorcode.get(error, str(error)))
                        sock.send(b"GET / HTTP/1.0\r\n\r\n")
                        selector.modify(sock, selectors.EVENT_READ, check)
                        continue
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as err:
                    selector.unregister(sock)
                    failures[check] = err.strerror or str(err)
                    continue
                answers[check] += data
                if check.protocol is Protocol.UDP or not data or len(answers[check]) > 4096:
                    selector.unregister(sock)
        for check in checks:
            if check in failures:
                continue
            raw = bytes(answers[check])
            body = raw.split(b"\r\n\r\n", 1)[1] if check.protocol is Protocol.TCP and b"\r\n\r\n" in raw else raw
            if not raw:
                failures[check] = "no answer"
            elif body.decode(errors="replace").strip() != check.identity:
                failures[check] = f"answered {body[:40].decode(errors='replace')!r}"
    finally:
        for sock in open_sockets.values():
            sock.close()
        selector.close()
    return failures


def server_problems(node_netns: str, checks: Sequence[ServerCheck]) -> list[str]:
    """Servers that do not answer from the node namespace, each tried
    :data:`CHECK_ATTEMPTS` times."""
    failing: dict[ServerCheck, str] = {}
    pending = list(checks)

    def one_round() -> bool:
        nonlocal pending
        failing.clear()
        failing.update(call_in_netns(node_netns, lambda: _check_all(pending, CHECK_TIMEOUT)))
        pending = list(failing)
        return not failing

    try:
        Retrying(
            stop=stop_after_attempt(CHECK_ATTEMPTS),
            wait=wait_fixed(0.1),
            retry=retry_if_result(lambda ok: not ok),
        )(one_round)
    except RetryError:
        pass
    return [
        f"the server of {c.endpoint} does not answer on {c.port}/{c.protocol.value} ({why})"
        for c, why in sorted(failing.items(), key=lambda item: (item[0].endpoint, item[0].port, item[0].protocol.value))
    ]
