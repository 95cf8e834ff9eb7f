"""Label selectors: parsing as the API server validates them, matching, text form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core.selectors import (
    LabelSelector,
    Operator,
    Requirement,
    SelectorSyntaxError,
    check_label_key,
    check_label_value,
    parse_labels,
    parse_selector,
)

WEB = {"app": "web", "tier": "front"}
DB = {"app": "db", "tier": "back"}
BARE: dict[str, str] = {}


def sel(raw: Any) -> LabelSelector:
    return parse_selector(raw)


# -- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, {}, {"matchLabels": {}}, {"matchLabels": None, "matchExpressions": []}])
def test_empty_selector_matches_everything(raw: Any) -> None:
    selector = sel(raw)
    assert selector.is_empty
    assert selector.matches(WEB) and selector.matches(DB) and selector.matches(BARE)


def test_match_labels_needs_every_pair() -> None:
    selector = sel({"matchLabels": {"app": "web", "tier": "front"}})
    assert selector.matches(WEB)
    assert selector.matches({**WEB, "extra": "x"})
    assert not selector.matches({"app": "web"})
    assert not selector.matches({"app": "web", "tier": "back"})
    assert not selector.matches(BARE)


@pytest.mark.parametrize(
    ("expression", "web", "db", "bare"),
    [
        ({"key": "app", "operator": "In", "values": ["web"]}, True, False, False),
        ({"key": "app", "operator": "In", "values": ["web", "db"]}, True, True, False),
        ({"key": "app", "operator": "NotIn", "values": ["web"]}, False, True, True),
        ({"key": "app", "operator": "Exists"}, True, True, False),
        ({"key": "app", "operator": "DoesNotExist"}, False, False, True),
        ({"key": "missing", "operator": "NotIn", "values": ["x"]}, True, True, True),
        ({"key": "missing", "operator": "In", "values": ["x"]}, False, False, False),
    ],
)
def test_match_expressions(expression: dict[str, Any], web: bool, db: bool, bare: bool) -> None:
    selector = sel({"matchExpressions": [expression]})
    assert not selector.is_empty
    assert (selector.matches(WEB), selector.matches(DB), selector.matches(BARE)) == (web, db, bare)


def test_labels_and_expressions_are_anded() -> None:
    selector = sel(
        {
            "matchLabels": {"tier": "front"},
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "db"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches(WEB)
    assert not selector.matches(DB)
    assert not selector.matches({**WEB, "legacy": "true"})


def test_in_compares_values_exactly() -> None:
    selector = sel({"matchExpressions": [{"key": "v", "operator": "In", "values": ["1"]}]})
    assert selector.matches({"v": "1"})
    assert not selector.matches({"v": "01"})
    assert not selector.matches({"V": "1"})


# -- text form -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ({}, "<all>"),
        ({"matchLabels": {"tier": "front", "app": "web"}}, "app=web,tier=front"),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}, "env in (dev,prod)"),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["test"]}]}, "env notin (test)"),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, "env"),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, "!env"),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "env", "operator": "Exists"}, {"key": "old", "operator": "DoesNotExist"}],
            },
            "app=web,env,!old",
        ),
    ],
)
def test_str(raw: dict[str, Any], text: str) -> None:
    assert str(sel(raw)) == text


def test_to_manifest_round_trip() -> None:
    raw = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["dev", "prod"]},
            {"key": "old", "operator": "DoesNotExist"},
        ],
    }
    selector = sel(raw)
    assert selector.to_manifest() == raw
    assert sel(selector.to_manifest()) == selector
    assert LabelSelector().to_manifest() == {}


def test_parsed_requirements() -> None:
    selector = sel(
        {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["x", "y", "x"]}],
        }
    )
    assert list(selector.match_labels) == ["a", "b"]
    assert selector.match_expressions == (Requirement("env", Operator.NOT_IN, frozenset({"x", "y"})),)


def test_selector_is_immutable() -> None:
    labels = {"app": "web"}
    selector = LabelSelector(labels)
    labels["app"] = "db"
    assert selector.matches({"app": "web"})
    with pytest.raises(TypeError):
        selector.match_labels["app"] = "db"  # type: ignore[index]


# -- syntax errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ("app=web", "", "got str"),
        ({"matchLabel": {}}, "matchLabel", "unknown field"),
        ({"matchLabels": ["app"]}, "matchLabels", "got list"),
        ({"matchLabels": {"app": 1}}, "matchLabels.app", "must be a string"),
        ({"matchExpressions": {"key": "app"}}, "matchExpressions", "got dict"),
        ({"matchExpressions": ["app"]}, "matchExpressions[0]", "got str"),
        ({"matchExpressions": [{"key": "app", "operator": "Exists", "value": []}]}, "matchExpressions[0].value", "unknown field"),
        ({"matchExpressions": [{"key": "", "operator": "Exists"}]}, "matchExpressions[0].key", "non-empty"),
        (
            {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]},
            "matchExpressions[0].operator",
            "unknown operator 'Equals'",
        ),
        ({"matchExpressions": [{"key": "app", "operator": "In"}]}, "matchExpressions[0].values", "at least one value"),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": "web"}]}, "matchExpressions[0].values", "got str"),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["ok", "-bad"]}]},
            "matchExpressions[0].values[1]",
            "'-bad' is invalid",
        ),
        (
            {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0].values",
            "takes no values",
        ),
        (
            {
                "matchExpressions": [
                    {"key": "app", "operator": "Exists"},
                    {"key": "b", "operator": "DoesNotExist", "values": ["x"]},
                ]
            },
            "matchExpressions[1].values",
            "takes no values",
        ),
    ],
)
def test_syntax_errors_name_the_field(raw: Any, field: str, words: str) -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(raw)
    assert info.value.field == field
    assert words in info.value.message


# -- label keys and values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "app",
        "a",
        "app.kubernetes.io/name",
        "example.com/a_b-c.d",
        "A1",
        "a" * 63,
        f"{'p' * 253}/n",
        "kubernetes.io/metadata.name",
    ],
)
def test_valid_label_keys(key: str) -> None:
    assert check_label_key(key) is None


@pytest.mark.parametrize(
    "key",
    [
        "",
        "-app",
        "app-",
        "_app",
        "a b",
        "a" * 64,
        "/app",
        "Example.com/app",
        "example.com/",
        "a/b/c",
        f"{'p' * 254}/n",
        "exa_mple.com/app",
        5,
        None,
        "app\n",
    ],
)
def test_invalid_label_keys(key: Any) -> None:
    assert check_label_key(key) is not None


@pytest.mark.parametrize("value", ["", "web", "Web-1", "a.b_c", "v" * 63, "1"])
def test_valid_label_values(value: str) -> None:
    assert check_label_value(value) is None


@pytest.mark.parametrize("value", ["-web", "web-", "a b", "v" * 64, "é", 1, True, None, "web\n"])
def test_invalid_label_values(value: Any) -> None:
    assert check_label_value(value) is not None


def test_parse_labels() -> None:
    assert parse_labels(None) == {}
    assert parse_labels({"app": "web"}, "labels") == {"app": "web"}
    with pytest.raises(SelectorSyntaxError) as info:
        parse_labels({"app": "web", "bad key": "x"}, "labels")
    assert info.value.field == "labels.bad key"
    with pytest.raises(SelectorSyntaxError) as info:
        parse_labels(["app"], "labels")
    assert info.value.field == "labels" and info.value.expected


# -- property: parse, print as manifest, parse again ------------------------------------------

_KEY = st.sampled_from(["app", "tier", "example.com/team"])
_VALUE = st.sampled_from(["web", "db", "", "v1.2"])


@st.composite
def _raw_selectors(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if draw(st.booleans()):
        raw["matchLabels"] = draw(st.dictionaries(_KEY, _VALUE, max_size=2))
    expressions: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        expr: dict[str, Any] = {"key": draw(_KEY), "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(_VALUE, min_size=1, max_size=3))
        expressions.append(expr)
    write_empty_list = draw(st.booleans())
    if expressions or write_empty_list:
        raw["matchExpressions"] = expressions
    return raw


@settings(max_examples=200, deadline=None, derandomize=True)
@given(raw=_raw_selectors(), labels=st.dictionaries(_KEY, _VALUE, max_size=3))
def test_manifest_round_trip_keeps_matching(raw: dict[str, Any], labels: dict[str, str]) -> None:
    selector = parse_selector(raw)
    again = parse_selector(selector.to_manifest())
    assert again == selector
    assert again.matches(labels) == selector.matches(labels)
    # Matching by hand, straight from the Kubernetes definitions.
    expected = all(labels.get(k) == v for k, v in raw.get("matchLabels", {}).items())
    for expr in raw.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In":
            expected &= key in labels and labels[key] in values
        elif op == "NotIn":
            expected &= key not in labels or labels[key] not in values
        elif op == "Exists":
            expected &= key in labels
        else:
            expected &= key not in labels
    assert selector.matches(labels) == expected
