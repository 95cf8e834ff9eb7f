"""Backends on a Kubernetes API server: the shared base (kind, existing) and the existing-cluster backend."""
