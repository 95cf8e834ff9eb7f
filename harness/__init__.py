"""netpol-harness: test Kubernetes NetworkPolicies against real traffic."""

__version__ = "0.1.0"
