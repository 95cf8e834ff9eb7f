"""What an API server does with a custom object before storing it, as far as the
CRD's structural schema decides (k8s.io/apiextensions-apiserver: defaulting, then
validation; with ``fieldValidation=Strict``, which the harness sends, an unknown
field is an error instead of being pruned): for the tests' API double, with the
CRDs recorded from the pinned Calico releases (tests/kube/recorded/crds/).

The schema's types, enums, required fields, bounds, patterns and list lengths are
checked with jsonschema; ``default`` values are filled in first, as the API server
does. The CEL rules (``x-kubernetes-validations``) are not evaluated here: the
harness's own parser implements them (harness/core/cluster_policy/parser.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml

RECORDED = Path(__file__).resolve().parent / "recorded" / "crds"


@dataclass(frozen=True)
class RecordedCrd:
    """One CustomResourceDefinition as a Calico release ships it."""

    path: Path

    @cached_property
    def document(self) -> Mapping[str, Any]:
        loaded = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        assert isinstance(loaded, dict) and loaded.get("kind") == "CustomResourceDefinition", self.path
        return loaded

    @property
    def name(self) -> str:
        return str(self.document["metadata"]["name"])

    @property
    def group(self) -> str:
        return str(self.document["spec"]["group"])

    @property
    def plural(self) -> str:
        return str(self.document["spec"]["names"]["plural"])

    @property
    def kind(self) -> str:
        return str(self.document["spec"]["names"]["kind"])

    @property
    def namespaced(self) -> bool:
        return bool(self.document["spec"]["scope"] == "Namespaced")

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(str(v["name"]) for v in self.document["spec"]["versions"] if v.get("served", True))

    def schema(self, version: str) -> Mapping[str, Any]:
        for entry in self.document["spec"]["versions"]:
            if entry["name"] == version:
                return dict(entry["schema"]["openAPIV3Schema"])
        raise KeyError(f"{self.name} serves no version {version}")

    def problems(self, obj: Mapping[str, Any], version: str) -> list[str]:
        """What the API server would refuse in ``obj`` (its spec: metadata is the API
        server's own), after defaulting; empty when it is accepted."""
        schema = self.schema(version)
        spec_schema = (schema.get("properties") or {}).get("spec")
        if spec_schema is None:
            return []
        spec = copy.deepcopy(dict(obj.get("spec") or {}))
        apply_defaults(spec, spec_schema)
        validator = jsonschema.Draft7Validator(closed(spec_schema))
        found = []
        for error in sorted(validator.iter_errors(spec), key=lambda e: list(e.absolute_path)):
            where = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            found.append(f"{where}: {error.message}")
        return found


def recorded(folder: str) -> dict[str, RecordedCrd]:
    """The recorded CRDs of one release folder, by CRD name."""
    crds = [RecordedCrd(path) for path in sorted((RECORDED / folder).glob("*.yaml"))]
    return {crd.name: crd for crd in crds}


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> None:
    """Fill in ``default`` values below ``value``, as the API server's defaulting does."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])


def closed(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with every object that lists its properties closed to others: what
    strict field validation makes of a structural schema (unknown fields are errors)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = closed(value)
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = closed(value)
        elif key == "pattern" and isinstance(value, str) and value.startswith("^(?i)"):
            # RE2 (the API server's) takes inline flags anywhere; Python's re only first.
            out[key] = "(?i)^" + value[len("^(?i)") :]
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out
