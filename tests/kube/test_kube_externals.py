"""External hosts on kind: one Docker network per /24 of external addresses,
attached to every node, with the hosts at their declared addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from harness.core.errors import BackendError
from harness.core.topology import ExternalHost, PortSpec, Protocol
from harness.kube.externals import (
    LABEL,
    container_name,
    container_run_command,
    network_connect_command,
    network_create_command,
    plan_networks,
)

IP = ipaddress.IPv4Address
NODES = ["pytest-kind-worker2", "pytest-kind-control-plane", "pytest-kind-worker"]
API = ExternalHost("public-api", IP("203.0.113.10"), (PortSpec(443),))
SITE = ExternalHost("public-site", IP("198.51.100.20"), (PortSpec(443), PortSpec(53, Protocol.UDP)))
TOP = ExternalHost("top", IP("203.0.113.254"), (PortSpec(8443),))
DOCKER = Path("/usr/bin/docker")


def test_one_network_per_slash_24_with_free_gateway_and_node_addresses() -> None:
    networks = plan_networks("pytest-kind", [API, SITE, TOP], NODES, [ipaddress.IPv4Network("172.18.0.0/16")])
    assert [str(n.subnet) for n in networks] == ["198.51.100.0/24", "203.0.113.0/24"]
    site_net, api_net = networks
    assert site_net.hosts == (SITE,)
    assert api_net.hosts == (API, TOP)
    # The top address belongs to a host: the gateway and nodes take the next ones down.
    assert api_net.gateway == IP("203.0.113.253")
    assert dict(api_net.node_addresses) == {
        "pytest-kind-control-plane": IP("203.0.113.252"),
        "pytest-kind-worker": IP("203.0.113.251"),
        "pytest-kind-worker2": IP("203.0.113.250"),
    }
    for net in networks:
        used = [net.gateway, *net.node_addresses.values(), *(h.ip for h in net.hosts)]
        assert len(set(used)) == len(used)
        assert all(ip in net.subnet for ip in used)
    assert api_net.name == "nph-pytest-kind-203-0-113-0"


def test_an_address_inside_a_docker_network_is_refused() -> None:
    inside = ExternalHost("db", IP("172.18.0.50"), (PortSpec(5432),))
    with pytest.raises(BackendError, match=r"inside Docker network 172\.18\.0\.0/16"):
        plan_networks("pytest-kind", [inside], NODES, [ipaddress.IPv4Network("172.18.0.0/16")])


def test_network_and_broadcast_addresses_are_refused() -> None:
    with pytest.raises(BackendError, match="network or broadcast address"):
        plan_networks("c", [ExternalHost("x", IP("203.0.113.255"))], NODES)


def test_docker_command_lines() -> None:
    (net,) = plan_networks("pytest-kind", [SITE], NODES)
    assert network_create_command(DOCKER, "pytest-kind", net) == [
        "/usr/bin/docker",
        "network",
        "create",
        "--driver",
        "bridge",
        "--internal",
        "--subnet",
        "198.51.100.0/24",
        "--gateway",
        "198.51.100.254",
        "--label",
        f"{LABEL}=pytest-kind",
        "nph-pytest-kind-198-51-100-0",
    ]
    assert network_connect_command(DOCKER, net, "pytest-kind-worker") == [
        "/usr/bin/docker",
        "network",
        "connect",
        "--ip",
        "198.51.100.252",
        "nph-pytest-kind-198-51-100-0",
        "pytest-kind-worker",
    ]
    image = "registry.k8s.io/e2e-test-images/agnhost:2.66.0"
    run = container_run_command(DOCKER, "pytest-kind", net, SITE, image)
    assert run[:5] == ["/usr/bin/docker", "run", "--detach", "--name", container_name("pytest-kind", SITE)]
    assert container_name("pytest-kind", SITE) == "nph-pytest-kind-public-site"
    text = " ".join(run)
    assert "--network nph-pytest-kind-198-51-100-0 --ip 198.51.100.20" in text
    # Unprivileged like the probe pods, and allowed to bind 53.
    assert "--user 65534:65534 --read-only --cap-drop ALL --security-opt no-new-privileges" in text
    assert "--sysctl net.ipv4.ip_unprivileged_port_start=0" in text
    assert "--env SERVE_TCP_PORT_443=public-site --env SERVE_UDP_PORT_53=public-site" in text
    assert run[-2:] == [image, "porter"]
    high = container_run_command(DOCKER, "c", plan_networks("c", [API], NODES)[0], API, image)
    assert "--sysctl" in high  # 443 is below 1024
    only_high = ExternalHost("h", IP("203.0.113.7"), (PortSpec(8443),))
    assert "--sysctl" not in container_run_command(DOCKER, "c", plan_networks("c", [only_high], NODES)[0], only_high, image)
