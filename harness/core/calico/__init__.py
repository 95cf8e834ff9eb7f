"""Calico: its selector language, its staged policies, and their translation into
NetworkPolicies for the reference model (see docs/staged-policies.md)."""
