"""Calico's selector language: parsing, evaluation, precedence, canonical text and the
translation into Kubernetes label requirements.

The tables marked *recorded* hold selectors, label sets and verdicts (or canonical
forms, or rejections) taken from Calico's own parser tests
(projectcalico/calico ``libcalico-go/lib/selector/parser/parser_test.go`` at v3.32.1),
restated here as data: they pin this parser to what Calico answers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core.calico.selector import (
    MAX_DEPTH,
    MAX_LABEL_LENGTH,
    MAX_SELECTOR_LENGTH,
    MAX_TERMS,
    All,
    And,
    CalicoSelectorError,
    Compare,
    Comparison,
    Has,
    InSet,
    Node,
    Not,
    NotExpressible,
    Or,
    parse_calico_selector,
    to_label_selectors,
    to_requirements,
)
from harness.core.selectors import Operator, Requirement

# -- recorded: verdicts --------------------------------------------------------------

RECORDED_VERDICTS: list[tuple[str, dict[str, str], bool]] = [
    ('a == "b"', {"a": "b"}, True),
    ('a == "b"', {"a": "b", "c": "d"}, True),
    ('a == "b"', {}, False),
    ('a == "b"', {"a": "c"}, False),
    ('a == "b"', {"c": "d"}, False),
    ('a == "b" && c == "d"', {"a": "b", "c": "d"}, True),
    ('a == "b" && c == "d"', {"a": "b", "c": "e"}, False),
    ('a == "b" && c == "d"', {"a": "b"}, False),
    ('a == "b" || c == "d"', {"c": "d"}, True),
    ('a == "b" || c == "d"', {"a": "e", "c": "e"}, False),
    ('a in {"\'", \'"\', "c"}', {"a": '"'}, True),
    ('a in {"\'", \'"\', "c"}', {"a": "'"}, True),
    ('a in {"\'", \'"\', "c"}', {}, False),
    ('a not in {"\'", \'"\', "c"}', {}, True),
    ('a not in {"\'", \'"\', "c"}', {"a": "c"}, False),
    ("a != 'a'", {}, True),
    ("a != 'a'", {"a": "a"}, False),
    ('a contains "a"', {"a": "bab"}, True),
    ('a contains "a"', {"b": "aaa"}, False),
    ('a starts with "a"', {"a": "abb"}, True),
    ('a starts with "a"', {"a": "baa"}, False),
    ('a ends with "a"', {"a": "bba"}, True),
    ('a ends with "a"', {"a": "aab"}, False),
    ('!a in {"a"}', {"a": "b"}, True),
    ("has(a)", {"a": "b"}, True),
    ("!has(a)", {"b": "b"}, True),
    ("!!has(b)", {"a": "b"}, False),
    ("!!! has(a)", {"a": "b"}, False),
    ("! !!has(a)", {"a": "b"}, False),
    ("", {}, True),
    (" ", {"a": "b"}, True),
    (" all()", {"a": "b"}, True),
    (" global()", {}, True),
    ("a == 'a1' && !b == 'b1'", {"a": "a1", "b": "b1"}, False),
    ("!(!has(a) || has(b))", {"a": "a"}, True),
    ("!(has(b) || !has(a))", {"a": "a"}, True),
    ("a == 'a1' || b != 'b1'", {"a": "a1", "b": "b1"}, True),
    ("a != 'a1' || b != 'b1'", {"a": "a1", "b": "b1"}, False),
    ("! a == 'a1' || ! b == 'b1'", {"a": "a1", "b": "b1"}, False),
]


@pytest.mark.parametrize(("text", "labels", "verdict"), RECORDED_VERDICTS)
def test_recorded_verdicts(text: str, labels: dict[str, str], verdict: bool) -> None:
    selector = parse_calico_selector(text)
    assert selector.matches(labels) is verdict
    # The canonical text means the same.
    assert parse_calico_selector(str(selector)).matches(labels) is verdict


RECORDED_REJECTED = [
    "b == b",
    "b contains b",
    "b starts with b",
    "'b1' == b",
    "b",
    "a b",
    "!",
    'foo == "bar" &',
    'foo == "bar" |',
    "foo != ||",
    'foo in {"", ||',
    'foo in ""',
    '"FOO',
    "\"FOO'",
    "'FOO",
    "(",
    '(a == "foo"',
    ")",
    "()",
    "%",
    'a == "b" && %',
    "a ",
    "has(foo) &&",
]


@pytest.mark.parametrize("text", RECORDED_REJECTED)
def test_recorded_rejections(text: str) -> None:
    with pytest.raises(CalicoSelectorError):
        parse_calico_selector(text)


RECORDED_CANONICAL = [
    ("", "all()"),
    (" (all() )", "all()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ('a == "\'"', 'a == "\'"'),
    ("a == '\"'", "a == '\"'"),
    ("a startswith '\"'", "a starts with '\"'"),
    ('a endswith "\'"', 'a ends with "\'"'),
    ("a!='\"'", "a != '\"'"),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
]


@pytest.mark.parametrize(("text", "canonical"), RECORDED_CANONICAL)
def test_recorded_canonical_text_round_trips(text: str, canonical: str) -> None:
    selector = parse_calico_selector(text)
    assert str(selector) == canonical
    assert str(parse_calico_selector(canonical)) == canonical
    assert selector.text == text


# -- the tree -------------------------------------------------------------------------


def test_operations_parse_to_their_nodes() -> None:
    assert parse_calico_selector("app == 'db'").root == Comparison("app", Compare.EQ, "db")
    assert parse_calico_selector("app != 'db'").root == Comparison("app", Compare.NE, "db")
    assert parse_calico_selector("app notin {'a'}").root == InSet("app", frozenset({"a"}), negated=True)
    assert parse_calico_selector("app not  in {}").root == InSet("app", frozenset(), negated=True)
    assert parse_calico_selector("app in {'a',}").root == InSet("app", frozenset({"a"}))
    assert parse_calico_selector("has(example.com/tier)").root == Has("example.com/tier")
    assert parse_calico_selector("all()").root == All()
    assert parse_calico_selector("\tapp\t==\t'x'\t").root == Comparison("app", Compare.EQ, "x")


def test_in_with_an_empty_set_matches_nothing_and_not_in_everything() -> None:
    assert not parse_calico_selector("a in {}").matches({"a": ""})
    assert parse_calico_selector("a not in {}").matches({})


def test_values_keep_spaces_and_are_not_unescaped() -> None:
    selector = parse_calico_selector(r"role == 'front end\n'")
    assert selector.matches({"role": r"front end\n"})


# -- precedence -----------------------------------------------------------------------

PRECEDENCE = [
    # || binds loosest: a || (b && c)
    ('a == "1" || b == "1" && c == "1"', {"a": "1"}, True),
    ('a == "1" || b == "1" && c == "1"', {"b": "1"}, False),
    # && groups left to right before ||: (a && b) || c
    ('a == "1" && b == "1" || c == "1"', {"c": "1"}, True),
    ('a == "1" && b == "1" || c == "1"', {"a": "1"}, False),
    # ! applies to the next operation only: (!a) && b
    ('!a == "1" && b == "1"', {"b": "1"}, True),
    ('!a == "1" && b == "1"', {}, False),
    # ... or to a parenthesised group
    ('!(a == "1" && b == "1")', {"a": "1"}, True),
    ('!(a == "1" && b == "1")', {"a": "1", "b": "1"}, False),
    # parentheses override
    ('(a == "1" || b == "1") && c == "1"', {"a": "1"}, False),
    ('(a == "1" || b == "1") && c == "1"', {"a": "1", "c": "1"}, True),
]


@pytest.mark.parametrize(("text", "labels", "verdict"), PRECEDENCE)
def test_precedence(text: str, labels: dict[str, str], verdict: bool) -> None:
    assert parse_calico_selector(text).matches(labels) is verdict


def test_precedence_shapes_the_tree() -> None:
    a, b, c = (Comparison(k, Compare.EQ, "1") for k in "abc")
    assert parse_calico_selector('a == "1" || b == "1" && c == "1"').root == Or((a, And((b, c))))
    assert parse_calico_selector('!a == "1" && b == "1"').root == And((Not(a), b))
    assert parse_calico_selector('a == "1" && b == "1" && c == "1"').root == And((a, b, c))


KEYS = ("a", "b", "c")
VALUES = ("1", "2")

atoms = st.one_of(
    st.builds(lambda k, v: Comparison(k, Compare.EQ, v), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(lambda k, v: Comparison(k, Compare.NE, v), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(
        lambda k, vs, n: InSet(k, frozenset(vs), n), st.sampled_from(KEYS), st.sets(st.sampled_from(VALUES)), st.booleans()
    ),
    st.builds(Has, st.sampled_from(KEYS)),
    st.just(All()),
)
trees: st.SearchStrategy[Node] = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(lambda ops: And(tuple(ops)), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda ops: Or(tuple(ops)), st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=8,
)
label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES))


def minimal_text(node: Node) -> str:
    """The tree written with as few parentheses as the precedence rules allow."""
    if isinstance(node, Not):
        inner = node.operand
        return "!" + (f"({minimal_text(inner)})" if isinstance(inner, And | Or) else minimal_text(inner))
    if isinstance(node, And):
        return " && ".join(f"({minimal_text(op)})" if isinstance(op, Or | And) else minimal_text(op) for op in node.operands)
    if isinstance(node, Or):
        return " || ".join(f"({minimal_text(op)})" if isinstance(op, Or) else minimal_text(op) for op in node.operands)
    return str(node)


@settings(max_examples=300, deadline=None)
@given(trees, label_sets)
def test_text_with_minimal_parentheses_means_the_tree(tree: Node, labels: dict[str, str]) -> None:
    text = minimal_text(tree)
    assert parse_calico_selector(text).matches(labels) is tree.evaluate(labels), text


@settings(max_examples=300, deadline=None)
@given(trees, label_sets)
def test_canonical_text_means_the_tree(tree: Node, labels: dict[str, str]) -> None:
    assert parse_calico_selector(str(tree)).matches(labels) is tree.evaluate(labels)


# -- errors ---------------------------------------------------------------------------


def error(text: Any) -> CalicoSelectorError:
    with pytest.raises(CalicoSelectorError) as info:
        parse_calico_selector(text)
    return info.value


def test_errors_say_what_and_where() -> None:
    err = error("app == db")
    assert err.column == 8 and "expected a quoted string, found label 'db'" in str(err)
    err = error("app = 'db'")
    assert err.column == 5 and "expected ==" in err.message
    err = error("app == 'db' tier == 'x'")
    assert err.column == 13 and "after a complete selector" in err.message
    assert "expected an operator after label 'app'" in error("app db").message
    assert "no closing ')' after has(" in error("has(app").message
    assert "unterminated string" in error("app == 'db").message
    assert "expected ')'" in error("(app == 'db'").message
    assert "expected a set" in error("app in 'db'").message
    assert error(42).message == "a selector is a string, got int"


def test_a_line_break_is_rejected_as_calico_does() -> None:
    # Calico's tokenizer skips spaces and tabs only; a YAML literal block keeps its newline.
    err = error("app == 'db'\n")
    assert "line break" in err.message and ">-" in err.message and err.column == 12


def test_limits() -> None:
    assert "longer than 512" in error("has(" + "a" * (MAX_LABEL_LENGTH + 1) + ")").message
    parse_calico_selector("has(" + "a" * MAX_LABEL_LENGTH + ")")
    assert f"more than {MAX_SELECTOR_LENGTH}" in error("a == '" + "x" * MAX_SELECTOR_LENGTH + "'").message
    assert f"more than {MAX_DEPTH} deep" in error("(" * (MAX_DEPTH + 1) + "all()" + ")" * (MAX_DEPTH + 1)).message
    assert parse_calico_selector("(" * MAX_DEPTH + "all()" + ")" * MAX_DEPTH).is_all


def test_none_is_the_empty_selector() -> None:
    assert parse_calico_selector(None).is_all


# -- renaming values ------------------------------------------------------------------


def test_with_values_renames_the_values_of_the_given_keys_only() -> None:
    selector = parse_calico_selector("ns == 'prod' && app == 'prod' || ns in {'dev'} || !ns != 'qa'")
    renamed = selector.with_values(frozenset({"ns"}), lambda v: f"nph-1-{v}")
    assert str(renamed) == ('((ns == "nph-1-prod" && app == "prod") || ns in {"nph-1-dev"} || !ns != "nph-1-qa")')
    assert renamed.matches({"ns": "nph-1-dev"}) and not renamed.matches({"ns": "dev"})


# -- Kubernetes requirements ----------------------------------------------------------


def req(key: str, op: Operator, *values: str) -> Requirement:
    return Requirement(key, op, frozenset(values))


def test_requirements_of_each_operation() -> None:
    def one(text: str) -> tuple[Requirement, ...]:
        (conjunction,) = to_requirements(parse_calico_selector(text))
        return conjunction

    assert one("a == 'x'") == (req("a", Operator.IN, "x"),)
    assert one("a != 'x'") == (req("a", Operator.NOT_IN, "x"),)
    assert one("a in {'x', 'y'}") == (req("a", Operator.IN, "x", "y"),)
    assert one("a not in {'x'}") == (req("a", Operator.NOT_IN, "x"),)
    assert one("has(a)") == (req("a", Operator.EXISTS),)
    assert one("!has(a)") == (req("a", Operator.DOES_NOT_EXIST),)
    assert one("!a == 'x'") == (req("a", Operator.NOT_IN, "x"),)
    assert one("!a != 'x'") == (req("a", Operator.IN, "x"),)
    assert one("!a not in {'x'}") == (req("a", Operator.IN, "x"),)
    assert one("all()") == ()


def test_disjunctions_and_negations_expand_into_alternatives() -> None:
    assert to_requirements(parse_calico_selector("(a == '1' || b == '1') && c == '1'")) == (
        (req("a", Operator.IN, "1"), req("c", Operator.IN, "1")),
        (req("b", Operator.IN, "1"), req("c", Operator.IN, "1")),
    )
    # De Morgan: !(a || b) is !a && !b
    assert to_requirements(parse_calico_selector("!(a == '1' || has(b))")) == (
        (req("a", Operator.NOT_IN, "1"), req("b", Operator.DOES_NOT_EXIST)),
    )
    assert to_requirements(parse_calico_selector("!all()")) == ()
    assert len(to_label_selectors(parse_calico_selector("a == '1' || a == '2'"))) == 2


def test_string_matching_operators_are_not_expressible() -> None:
    for text in ("a contains 'x'", "a starts with 'x'", "!a ends with 'x'"):
        with pytest.raises(NotExpressible, match="has no equivalent in a Kubernetes label selector"):
            to_requirements(parse_calico_selector(text))


def test_expansion_is_bounded() -> None:
    pairs = " && ".join(f"(k{i} == '1' || j{i} == '1')" for i in range(7))  # 2**7 alternatives
    with pytest.raises(NotExpressible, match=f"more than {MAX_TERMS} alternatives"):
        to_requirements(parse_calico_selector(pairs))
    six = " && ".join(f"(k{i} == '1' || j{i} == '1')" for i in range(6))
    assert len(to_requirements(parse_calico_selector(six))) == 64


@settings(max_examples=400, deadline=None)
@given(trees, label_sets)
def test_requirements_match_exactly_when_the_selector_does(tree: Node, labels: dict[str, str]) -> None:
    alternatives = to_requirements(tree)
    by_requirements = any(all(r.matches(labels) for r in conj) for conj in alternatives)
    assert by_requirements is tree.evaluate(labels)
    by_label_selectors = any(s.matches(labels) for s in to_label_selectors(tree))
    assert by_label_selectors is tree.evaluate(labels)
