"""Kubernetes label selectors (matchLabels + matchExpressions), parsed and matched.

Pure: used by the reference model, by every backend that compiles policies itself,
and by the label-selector form of expectation rules.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.core.topology import frozen_labels, is_dns_subdomain

# Qualified name: optional DNS-subdomain prefix and a name part (validation.go).
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


class SelectorSyntaxError(ValueError):
    """A selector is malformed; ``field`` is relative to the selector."""

    def __init__(self, field: str, message: str, expected: str = "") -> None:
        self.field = field
        self.message = message
        self.expected = expected
        super().__init__(message)


class Operator(enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.IN:
            return labels.get(self.key) in self.values
        if self.operator is Operator.NOT_IN:
            # As in apimachinery: a pod without the key satisfies NotIn.
            return labels.get(self.key) not in self.values
        if self.operator is Operator.EXISTS:
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """An empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=frozen_labels, hash=False)
    match_expressions: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "match_labels", frozen_labels(self.match_labels))

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels.items()]
        for req in self.match_expressions:
            values = ",".join(sorted(req.values))
            if req.operator is Operator.IN:
                parts.append(f"{req.key} in ({values})")
            elif req.operator is Operator.NOT_IN:
                parts.append(f"{req.key} notin ({values})")
            elif req.operator is Operator.EXISTS:
                parts.append(req.key)
            else:
                parts.append(f"!{req.key}")
        return ",".join(parts) or "<all>"

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [
                {"key": r.key, "operator": r.operator.value, **({"values": sorted(r.values)} if r.values else {})}
                for r in self.match_expressions
            ]
        return out


def check_label_key(key: object) -> str | None:
    """Why ``key`` is not a valid label key, or None."""
    if not isinstance(key, str) or not key:
        return "a label key must be a non-empty string"
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return f"label key {key!r} has an invalid prefix (a DNS subdomain such as example.com)"
    if len(name) > 63 or not _NAME_PART.match(name):
        return (
            f"label key {key!r} is invalid (up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit)"
        )
    return None


def check_label_value(value: object) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if not isinstance(value, str):
        return f"label value {value!r} must be a string (quote numbers and booleans in YAML)"
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (
            f"label value {value!r} is invalid (up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, or empty)"
        )
    return None


def parse_labels(raw: object, field_name: str = "") -> dict[str, str]:
    """Validate a ``{key: value}`` label map."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SelectorSyntaxError(field_name, f"got {type(raw).__name__}", "a mapping of label keys to values")
    out: dict[str, str] = {}
    for key, value in raw.items():
        problem = check_label_key(key) or check_label_value(value)
        if problem:
            raise SelectorSyntaxError(f"{field_name}.{key}" if field_name else str(key), problem)
        out[key] = value
    return out


def parse_selector(raw: object) -> LabelSelector:
    """Parse a ``metav1.LabelSelector`` as the API server validates it."""
    if raw is None:
        return LabelSelector()
    if not isinstance(raw, Mapping):
        raise SelectorSyntaxError(
            "", f"got {type(raw).__name__}", "a label selector mapping with matchLabels and/or matchExpressions"
        )
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        name = sorted(map(str, unknown))[0]
        raise SelectorSyntaxError(name, "unknown field", "matchLabels or matchExpressions")
    labels = parse_labels(raw.get("matchLabels"), "matchLabels")
    expressions_raw = raw.get("matchExpressions") or []
    if not isinstance(expressions_raw, list):
        raise SelectorSyntaxError(
            "matchExpressions", f"got {type(expressions_raw).__name__}", "a list of {key, operator, values}"
        )
    requirements = []
    for i, expr in enumerate(expressions_raw):
        where = f"matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise SelectorSyntaxError(where, f"got {type(expr).__name__}", "a mapping with key, operator and values")
        unknown = set(expr) - {"key", "operator", "values"}
        if unknown:
            raise SelectorSyntaxError(f"{where}.{sorted(map(str, unknown))[0]}", "unknown field", "key, operator or values")
        problem = check_label_key(expr.get("key"))
        if problem:
            raise SelectorSyntaxError(f"{where}.key", problem)
        try:
            operator = Operator(expr.get("operator"))
        except ValueError:
            raise SelectorSyntaxError(
                f"{where}.operator", f"unknown operator {expr.get('operator')!r}", "In, NotIn, Exists or DoesNotExist"
            ) from None
        values = expr.get("values") or []
        if not isinstance(values, list):
            raise SelectorSyntaxError(f"{where}.values", f"got {type(values).__name__}", "a list of label values")
        for j, value in enumerate(values):
            problem = check_label_value(value)
            if problem:
                raise SelectorSyntaxError(f"{where}.values[{j}]", problem)
        if operator in (Operator.IN, Operator.NOT_IN) and not values:
            raise SelectorSyntaxError(f"{where}.values", f"operator {operator.value} needs at least one value")
        if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            raise SelectorSyntaxError(f"{where}.values", f"operator {operator.value} takes no values")
        requirements.append(Requirement(expr["key"], operator, frozenset(values)))
    return LabelSelector(labels, tuple(requirements))
