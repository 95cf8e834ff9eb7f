"""Calico's selector language, parsed, evaluated against labels and turned into
Kubernetes label requirements.

The grammar and the evaluation follow Calico's own implementation
(projectcalico/calico ``libcalico-go/lib/selector/tokenizer/tokenizer.go``,
``parser/parser.go`` and ``parser/ast.go``, v3.30 to v3.32):

* operations: ``k == "v"``, ``k != "v"`` (true when ``k`` is absent), ``k in {"a", "b"}``,
  ``k not in {...}`` (also ``notin``; true when ``k`` is absent), ``has(k)``,
  ``k contains "s"``, ``k starts with "s"``, ``k ends with "s"`` (all three need ``k``),
  ``all()`` (true), ``global()`` (true as an expression; its meaning in a
  namespaceSelector is the policy's business);
* ``!`` applies to the operation or parenthesised group right after it and binds
  tighter than ``&&``, which binds tighter than ``||``; an empty selector is ``all()``;
* string literals are quoted with ``"`` or ``'`` and have no escapes; label names are
  letters, digits, ``_ . / -`` (at most 512 characters); only spaces and tabs separate
  tokens, so a newline is an error, as it is for Calico.

Calico places no limit on nesting; this parser stops at :data:`MAX_DEPTH` levels of
parentheses so that a hostile selector cannot exhaust the interpreter's stack.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from harness.core.selectors import LabelSelector, Operator, Requirement

#: Longest label name Calico's tokenizer accepts.
MAX_LABEL_LENGTH = 512
#: Longest selector the Calico API accepts (kubebuilder MaxLength on every selector field).
MAX_SELECTOR_LENGTH = 1024
#: Parenthesis nesting this parser accepts.
MAX_DEPTH = 64
#: Most conjunctions :func:`to_requirements` expands a selector into.
MAX_TERMS = 64


class CalicoSelectorError(ValueError):
    """A selector Calico would reject (or one too complex for the harness).

    ``column`` is 1-based, 0 when the error is not at one place."""

    def __init__(self, selector: str, column: int, message: str) -> None:
        self.selector = selector
        self.column = column
        self.message = message
        super().__init__(f"{message} at column {column}" if column else message)


class NotExpressible(ValueError):
    """A valid selector that Kubernetes label requirements cannot express."""


# -- tokens ---------------------------------------------------------------------------


class _Kind(enum.Enum):
    LABEL = "label"
    STRING = "string"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    EQ = "=="
    NE = "!="
    IN = "in"
    NOT_IN = "not in"
    NOT = "!"
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    ENDS_WITH = "ends with"
    ALL = "all()"
    GLOBAL = "global()"
    HAS = "has()"
    LPAREN = "("
    RPAREN = ")"
    AND = "&&"
    OR = "||"
    EOF = "end of selector"


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    value: str
    column: int  # 1-based

    def describe(self) -> str:
        if self.kind is _Kind.LABEL:
            return f"label {self.value!r}"
        if self.kind is _Kind.STRING:
            return f"string {self.value!r}"
        return repr(self.kind.value) if self.kind is not _Kind.EOF else "the end of the selector"


def _is_ident(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "_./-")


_OPERATOR_WORDS = (
    (("contains",), _Kind.CONTAINS),
    (("starts", "with"), _Kind.STARTS_WITH),
    (("ends", "with"), _Kind.ENDS_WITH),
    (("not", "in"), _Kind.NOT_IN),
    (("in",), _Kind.IN),
)
_SINGLE = {"(": _Kind.LPAREN, ")": _Kind.RPAREN, "{": _Kind.LBRACE, "}": _Kind.RBRACE, ",": _Kind.COMMA}
_PAIRS = {"=": ("==", _Kind.EQ), "&": ("&&", _Kind.AND), "|": ("||", _Kind.OR)}


class _Tokenizer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[_Token] = []

    def fail(self, message: str, pos: int | None = None) -> CalicoSelectorError:
        return CalicoSelectorError(self.text, (self.pos if pos is None else pos) + 1, message)

    def skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def words(self, words: tuple[str, ...]) -> int | None:
        """End of ``words`` (blanks allowed between them) at the current position,
        followed by a word boundary; None when they are not there."""
        pos = self.pos
        for i, word in enumerate(words):
            if not self.text.startswith(word, pos):
                return None
            pos += len(word)
            if i < len(words) - 1:
                while pos < len(self.text) and self.text[pos] in " \t":
                    pos += 1
        if pos < len(self.text) and _is_ident(self.text[pos]):
            return None
        return pos

    def identifier(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _is_ident(self.text[self.pos]):
            self.pos += 1
        ident = self.text[start : self.pos]
        if not ident:
            char = self.text[start] if start < len(self.text) else ""
            raise self.fail(f"expected a label name, found {char!r}" if char else "expected a label name", start)
        if len(ident) > MAX_LABEL_LENGTH:
            raise self.fail(f"label name longer than {MAX_LABEL_LENGTH} characters", start)
        return ident

    def function(self, name: str, kind: _Kind) -> None:
        """``all()``, ``global()`` or ``has(label)`` after their opening ``name(``."""
        start = self.pos
        self.pos += len(name) + 1
        self.skip_blanks()
        value = ""
        if kind is _Kind.HAS:
            value = self.identifier()
            self.skip_blanks()
        if not self.text.startswith(")", self.pos):
            raise self.fail(f"no closing ')' after {name}(")
        self.pos += 1
        self.tokens.append(_Token(kind, value, start + 1))

    def run(self) -> list[_Token]:
        text = self.text
        while True:
            self.skip_blanks()
            if self.pos >= len(text):
                self.tokens.append(_Token(_Kind.EOF, "", self.pos + 1))
                return self.tokens
            start, char = self.pos, text[self.pos]
            after_label = bool(self.tokens) and self.tokens[-1].kind is _Kind.LABEL
            if char in "\r\n":
                raise self.fail(
                    "a line break is not allowed in a selector: only spaces and tabs separate its parts "
                    "(in YAML, write it on one line or use >-)"
                )
            if char in _SINGLE:
                self.tokens.append(_Token(_SINGLE[char], char, start + 1))
                self.pos += 1
            elif char in "\"'":
                end = text.find(char, start + 1)
                if end < 0:
                    raise self.fail("unterminated string")
                self.tokens.append(_Token(_Kind.STRING, text[start + 1 : end], start + 1))
                self.pos = end + 1
            elif char == "!":
                kind = _Kind.NE if text.startswith("!=", start) else _Kind.NOT
                self.tokens.append(_Token(kind, kind.value, start + 1))
                self.pos += len(kind.value)
            elif char in _PAIRS:
                pair, kind = _PAIRS[char]
                if not text.startswith(pair, start):
                    raise self.fail(f"expected {pair}")
                self.tokens.append(_Token(kind, pair, start + 1))
                self.pos += 2
            elif after_label:
                for words, kind in _OPERATOR_WORDS:
                    word_end = self.words(words)
                    if word_end is not None:
                        self.tokens.append(_Token(kind, kind.value, start + 1))
                        self.pos = word_end
                        break
                else:
                    raise self.fail(f"expected an operator after label {self.tokens[-1].value!r}")
            elif text.startswith("has(", start):
                self.function("has", _Kind.HAS)
            elif text.startswith("all(", start):
                self.function("all", _Kind.ALL)
            elif text.startswith("global(", start):
                self.function("global", _Kind.GLOBAL)
            else:
                self.tokens.append(_Token(_Kind.LABEL, self.identifier(), start + 1))


# -- the syntax tree ------------------------------------------------------------------

Labels = Mapping[str, str]


def _quote(value: str) -> str:
    # Calico's own rendering: double quotes unless the value holds one.
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True)
class All:
    def evaluate(self, labels: Labels) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True)
class Global:
    """``global()``: matches as ``all()`` does; a policy gives it its meaning."""

    def evaluate(self, labels: Labels) -> bool:
        return True

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True)
class Has:
    key: str

    def evaluate(self, labels: Labels) -> bool:
        return self.key in labels

    def __str__(self) -> str:
        return f"has({self.key})"


class Compare(enum.Enum):
    EQ = "=="
    NE = "!="
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    ENDS_WITH = "ends with"


@dataclass(frozen=True)
class Comparison:
    key: str
    op: Compare
    value: str

    def evaluate(self, labels: Labels) -> bool:
        found = labels.get(self.key)
        if self.op is Compare.NE:
            return found != self.value  # an absent label is "not equal"
        if found is None:
            return False
        if self.op is Compare.EQ:
            return found == self.value
        if self.op is Compare.CONTAINS:
            return self.value in found
        if self.op is Compare.STARTS_WITH:
            return found.startswith(self.value)
        return found.endswith(self.value)

    def __str__(self) -> str:
        return f"{self.key} {self.op.value} {_quote(self.value)}"


@dataclass(frozen=True)
class InSet:
    key: str
    values: frozenset[str]
    negated: bool = False  # ``not in``: true when the label is absent too

    def evaluate(self, labels: Labels) -> bool:
        found = labels.get(self.key)
        inside = found is not None and found in self.values
        return not inside if self.negated else inside

    def __str__(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.key} {op} {{{', '.join(_quote(v) for v in sorted(self.values))}}}"


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, labels: Labels) -> bool:
        return not self.operand.evaluate(labels)

    def __str__(self) -> str:
        return f"!{self.operand}"


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]

    def evaluate(self, labels: Labels) -> bool:
        return all(op.evaluate(labels) for op in self.operands)

    def __str__(self) -> str:
        return "(" + " && ".join(map(str, self.operands)) + ")"


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]

    def evaluate(self, labels: Labels) -> bool:
        return any(op.evaluate(labels) for op in self.operands)

    def __str__(self) -> str:
        return "(" + " || ".join(map(str, self.operands)) + ")"


Node: TypeAlias = All | Global | Has | Comparison | InSet | Not | And | Or


@dataclass(frozen=True)
class CalicoSelector:
    """A parsed selector; ``text`` is what the user wrote."""

    text: str
    root: Node

    def matches(self, labels: Labels) -> bool:
        return self.root.evaluate(labels)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def is_all(self) -> bool:
        return isinstance(self.root, All)

    def uses(self, node_type: type[object]) -> bool:
        return any(isinstance(node, node_type) for node in walk(self.root))

    def with_values(self, keys: frozenset[str], rename: Callable[[str], str]) -> CalicoSelector:
        """The selector with every value compared against one of ``keys`` passed
        through ``rename`` (e.g. namespace names on a shared cluster)."""
        root = _rename(self.root, keys, rename)
        return CalicoSelector(str(root), root)


def walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Not):
        yield from walk(node.operand)
    elif isinstance(node, And | Or):
        for operand in node.operands:
            yield from walk(operand)


def _rename(node: Node, keys: frozenset[str], rename: Callable[[str], str]) -> Node:
    if isinstance(node, Comparison) and node.key in keys:
        return Comparison(node.key, node.op, rename(node.value))
    if isinstance(node, InSet) and node.key in keys:
        return InSet(node.key, frozenset(rename(v) for v in node.values), node.negated)
    if isinstance(node, Not):
        return Not(_rename(node.operand, keys, rename))
    if isinstance(node, And):
        return And(tuple(_rename(op, keys, rename) for op in node.operands))
    if isinstance(node, Or):
        return Or(tuple(_rename(op, keys, rename) for op in node.operands))
    return node


def map_keys(node: Node, key: Callable[[str], str]) -> Node:
    """``node`` with every label name passed through ``key`` (Calico's PrefixVisitor)."""
    if isinstance(node, Has):
        return Has(key(node.key))
    if isinstance(node, Comparison):
        return Comparison(key(node.key), node.op, node.value)
    if isinstance(node, InSet):
        return InSet(key(node.key), node.values, node.negated)
    if isinstance(node, Not):
        return Not(map_keys(node.operand, key))
    if isinstance(node, And):
        return And(tuple(map_keys(op, key) for op in node.operands))
    if isinstance(node, Or):
        return Or(tuple(map_keys(op, key) for op in node.operands))
    return node


# -- parsing --------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def kind(self) -> _Kind:
        # A call, so that type narrowing does not outlive the cursor moving on.
        return self.tokens[self.i].kind

    def fail(self, message: str, token: _Token | None = None) -> CalicoSelectorError:
        return CalicoSelectorError(self.text, (token or self.token).column, message)

    def or_expression(self) -> Node:
        operands = [self.and_expression()]
        while self.kind() is _Kind.OR:
            self.i += 1
            operands.append(self.and_expression())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expression(self) -> Node:
        operands = [self.operation()]
        while self.kind() is _Kind.AND:
            self.i += 1
            operands.append(self.operation())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def string(self) -> str:
        token = self.token
        if token.kind is not _Kind.STRING:
            raise self.fail(f"expected a quoted string, found {token.describe()}")
        self.i += 1
        return token.value

    def operation(self) -> Node:
        negated = False
        while self.kind() is _Kind.NOT:
            negated = not negated
            self.i += 1
        node = self.term()
        return Not(node) if negated else node

    def term(self) -> Node:
        token = self.token
        if token.kind is _Kind.HAS:
            self.i += 1
            return Has(token.value)
        if token.kind is _Kind.ALL:
            self.i += 1
            return All()
        if token.kind is _Kind.GLOBAL:
            self.i += 1
            return Global()
        if token.kind is _Kind.LPAREN:
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"parentheses nested more than {MAX_DEPTH} deep")
            self.i += 1
            node = self.or_expression()
            if self.kind() is not _Kind.RPAREN:
                raise self.fail(f"expected ')', found {self.token.describe()}")
            self.i += 1
            self.depth -= 1
            return node
        if token.kind is not _Kind.LABEL:
            raise self.fail(f"expected a label, has(), all(), '!' or '(', found {token.describe()}")
        self.i += 1
        op = self.token
        self.i += 1
        if op.kind is _Kind.EQ:
            return Comparison(token.value, Compare.EQ, self.string())
        if op.kind is _Kind.NE:
            return Comparison(token.value, Compare.NE, self.string())
        if op.kind is _Kind.CONTAINS:
            return Comparison(token.value, Compare.CONTAINS, self.string())
        if op.kind is _Kind.STARTS_WITH:
            return Comparison(token.value, Compare.STARTS_WITH, self.string())
        if op.kind is _Kind.ENDS_WITH:
            return Comparison(token.value, Compare.ENDS_WITH, self.string())
        if op.kind in (_Kind.IN, _Kind.NOT_IN):
            return InSet(token.value, self.set_literal(), op.kind is _Kind.NOT_IN)
        raise self.fail(f"expected ==, !=, in, not in, contains, starts with or ends with after label {token.value!r}", op)

    def set_literal(self) -> frozenset[str]:
        if self.kind() is not _Kind.LBRACE:
            raise self.fail(f'expected a set such as {{"a", "b"}}, found {self.token.describe()}')
        self.i += 1
        values: list[str] = []
        # As Calico: strings separated by commas; a trailing comma and {} are accepted.
        while self.kind() is _Kind.STRING:
            values.append(self.token.value)
            self.i += 1
            if self.kind() is not _Kind.COMMA:
                break
            self.i += 1
        if self.kind() is not _Kind.RBRACE:
            raise self.fail(f"expected '}}', found {self.token.describe()}")
        self.i += 1
        return frozenset(values)


def parse_calico_selector(text: object) -> CalicoSelector:
    """Parse a selector as Calico's API does; raise :class:`CalicoSelectorError`."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise CalicoSelectorError(str(text), 0, f"a selector is a string, got {type(text).__name__}")
    if len(text) > MAX_SELECTOR_LENGTH:
        raise CalicoSelectorError(text, 0, f"selector is {len(text)} characters long, more than {MAX_SELECTOR_LENGTH}")
    tokens = _Tokenizer(text).run()
    if tokens[0].kind is _Kind.EOF:
        return CalicoSelector(text, All())
    parser = _Parser(text, tokens)
    root = parser.or_expression()
    if parser.token.kind is not _Kind.EOF:
        raise parser.fail(f"unexpected {parser.token.describe()} after a complete selector")
    return CalicoSelector(text, root)


# -- conversion to Kubernetes label requirements -------------------------------------

#: A conjunction of requirements; a disjunction of them is a whole selector.
Conjunction = tuple[Requirement, ...]


def _atom(node: Node, negated: bool) -> list[Conjunction]:
    if isinstance(node, All | Global):
        return [] if negated else [()]
    if isinstance(node, Has):
        return [((Requirement(node.key, Operator.DOES_NOT_EXIST if negated else Operator.EXISTS)),)]
    if isinstance(node, InSet):
        inside = node.negated == negated  # "in", or "not (not in)"
        return [(Requirement(node.key, Operator.IN if inside else Operator.NOT_IN, node.values),)]
    if isinstance(node, Comparison):
        if node.op in (Compare.EQ, Compare.NE):
            inside = (node.op is Compare.EQ) != negated
            return [(Requirement(node.key, Operator.IN if inside else Operator.NOT_IN, frozenset({node.value})),)]
        raise NotExpressible(f"'{node.op.value}' ({node}) has no equivalent in a Kubernetes label selector")
    raise AssertionError(f"not an atom: {node!r}")


def _product(left: list[Conjunction], right: list[Conjunction]) -> list[Conjunction]:
    out: list[Conjunction] = []
    for a in left:
        for b in right:
            out.append(tuple(dict.fromkeys(a + b)))
            if len(out) > MAX_TERMS:
                raise NotExpressible(f"the selector expands into more than {MAX_TERMS} alternatives")
    return out


def _dnf(node: Node, negated: bool) -> list[Conjunction]:
    """Disjunctive normal form: negations pushed to the atoms (De Morgan)."""
    if isinstance(node, Not):
        return _dnf(node.operand, not negated)
    if isinstance(node, And | Or):
        conjunctive = isinstance(node, And) != negated
        parts = [_dnf(op, negated) for op in node.operands]
        if conjunctive:
            result: list[Conjunction] = [()]
            for part in parts:
                result = _product(result, part)
            return result
        union = list(dict.fromkeys(c for part in parts for c in part))
        if len(union) > MAX_TERMS:
            raise NotExpressible(f"the selector expands into more than {MAX_TERMS} alternatives")
        return union
    return _atom(node, negated)


def to_requirements(selector: CalicoSelector | Node) -> tuple[Conjunction, ...]:
    """The selector as alternatives of Kubernetes requirements: it matches a label
    set exactly when one conjunction's requirements all do. ``()`` is "nothing";
    ``((),)`` is "everything". Raises :class:`NotExpressible` for ``contains``,
    ``starts with``, ``ends with`` and for selectors that expand too far."""
    root = selector.root if isinstance(selector, CalicoSelector) else selector
    return tuple(_dnf(root, False))


def to_label_selectors(selector: CalicoSelector | Node) -> tuple[LabelSelector, ...]:
    """:func:`to_requirements` as label selectors, one per alternative."""
    return tuple(LabelSelector(match_expressions=conj) for conj in to_requirements(selector))
