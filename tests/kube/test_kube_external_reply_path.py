"""The reply path of external hosts on kind, rebuilt with network namespaces.

On kind an external host sits on a Docker network created ``--internal`` (no route
off the machine), to which every node is attached. This rebuilds that path with
the same addresses: a bridge with nothing else on it, a node with an address on
it, a pod behind the node, and Calico's ``natOutgoing`` as the node's one
masquerade rule. The pod reaches the host, which sees the node's address on the
bridge and answers on-link, with no route of its own; without the masquerade
rule the host cannot answer at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

NEEDS = [
    need
    for need, missing in (
        ("root", os.geteuid() != 0),
        ("ip (iproute2)", shutil.which("ip") is None),
        ("nft (nftables)", shutil.which("nft") is None),
        ("curl", shutil.which("curl") is None),
    )
    if missing
]
pytestmark = pytest.mark.skipif(bool(NEEDS), reason="needs " + ", ".join(NEEDS))

EXTERNAL = "203.0.113.10"
NODE_ON_BRIDGE = "203.0.113.252"
POD = "192.168.1.2"
#: Calico's natOutgoing: traffic from the pool to anywhere outside it leaves masqueraded.
NAT_OUTGOING = """
table ip nph_natout {
  chain postrouting {
    type nat hook postrouting priority srcnat;
    ip saddr 192.168.0.0/16 ip daddr != 192.168.0.0/16 masquerade
  }
}
"""
SERVER = """
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((sys.argv[1], 8080), Echo)
print("ready", flush=True)
server.serve_forever()
"""


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=True)


@pytest.fixture
def network() -> Iterator[dict[str, str]]:
    """Namespaces: bridge (the Docker bridge), node, pod, ext (the external host)."""
    tag = f"nphk{os.getpid()}"
    ns = {role: f"{tag}-{role}" for role in ("bridge", "node", "pod", "ext")}
    server: subprocess.Popen[str] | None = None
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", ns["bridge"], "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", ns["bridge"], "link", "set", "br0", "up")
        for role, address in (("node", NODE_ON_BRIDGE), ("ext", EXTERNAL)):
            port = f"{role}-port"
            sh("ip", "-n", ns[role], "link", "add", "eth1", "type", "veth", "peer", "name", port, "netns", ns["bridge"])
            sh("ip", "-n", ns["bridge"], "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns[role], "addr", "add", f"{address}/24", "dev", "eth1")
            sh("ip", "-n", ns[role], "link", "set", "eth1", "up")
        sh("ip", "-n", ns["pod"], "link", "add", "eth0", "type", "veth", "peer", "name", "cali0", "netns", ns["node"])
        sh("ip", "-n", ns["pod"], "addr", "add", f"{POD}/24", "dev", "eth0")
        sh("ip", "-n", ns["pod"], "link", "set", "eth0", "up")
        sh("ip", "-n", ns["pod"], "route", "add", "default", "via", "192.168.1.1")
        sh("ip", "-n", ns["node"], "addr", "add", "192.168.1.1/24", "dev", "cali0")
        sh("ip", "-n", ns["node"], "link", "set", "cali0", "up")
        sh("ip", "netns", "exec", ns["node"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns["ext"], sys.executable, "-c", SERVER, EXTERNAL],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield ns
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for name in ns.values():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def fetch(ns: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns["pod"], "curl", "-s", "--max-time", str(timeout), f"http://{EXTERNAL}:8080/"],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )


def test_the_external_host_answers_the_node_on_link_and_has_no_route_out(network: dict[str, str]) -> None:
    ns = network
    assert sh("ip", "-n", ns["ext"], "route", "show", "default").stdout.strip() == ""  # an internal network's host
    subprocess.run(["ip", "netns", "exec", ns["node"], "nft", "-f", "-"], input=NAT_OUTGOING, text=True, check=True, timeout=30)
    started = time.monotonic()
    answer = fetch(ns, 5)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == NODE_ON_BRIDGE  # the host saw the node's address on the bridge
    assert time.monotonic() - started < 5


def test_without_nat_outgoing_the_host_cannot_answer(network: dict[str, str]) -> None:
    answer = fetch(network, 1.5)
    assert answer.returncode == 28  # curl: timed out; the SYN arrived, the SYN-ACK had no route back
