"""The reference model of Kubernetes NetworkPolicy semantics (pure, vectorised)."""

from harness.model.cached import model_of
from harness.model.reference import ReferenceModel

__all__ = ["ReferenceModel", "model_of"]
