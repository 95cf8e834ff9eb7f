"""The reference model of Kubernetes NetworkPolicy semantics (pure, vectorised)."""

from harness.core.settings import ModelSettings, SelfTraffic
from harness.model.reference import ReferenceModel

__all__ = ["ModelSettings", "ReferenceModel", "SelfTraffic"]
