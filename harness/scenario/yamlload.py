"""YAML reading that refuses what PyYAML silently accepts (duplicate keys, alias
bombs) and turns every syntax error into a :class:`ScenarioError` naming the file
and line.

Documents are parsed by libyaml when PyYAML has it (ten times faster on large
scenarios) and built by PyYAML's safe constructor either way.

Aliases let a few bytes stand for a huge document ("billion laughs"): the parsed
object shares the repeated parts, but everything that walks it as a tree
(validation, reports) would expand it. So before a document is built, the size it
has once expanded (values, and characters of its scalars) and its nesting depth
are measured on the parsed nodes, and a document over :data:`MAX_EXPANDED_NODES`,
:data:`MAX_EXPANDED_CHARS` or :data:`MAX_DEPTH` is refused. Files over
:data:`MAX_FILE_BYTES` are refused before they are parsed. Whatever later walks a
loaded document (validation, the manifests kept for reports and clusters) therefore
walks at most that much.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.core.errors import ScenarioError

#: Largest file read (scenario or manifest).
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Most nodes (mappings, sequences, scalars) a document may have with every alias expanded.
MAX_EXPANDED_NODES = 2_000_000
#: Most characters of scalars (keys and values) a document may have with every alias
#: expanded: as much text as the largest file, so an alias cannot make more of it.
MAX_EXPANDED_CHARS = MAX_FILE_BYTES
#: Deepest nesting of mappings and sequences.
MAX_DEPTH = 64

#: Nesting (flow brackets, or indentation in columns) beyond which a text goes to the
#: pure-Python parser: libyaml's composer recurses in C and crashes the process on
#: very deep nesting, where Python's stops with a RecursionError.
_C_PARSER_MAX_BRACKETS = 200
_C_PARSER_MAX_INDENT = 2000
_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)
_OPENING = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSING = np.frombuffer(b"]}", dtype=np.uint8)


def _shallow(text: str) -> bool:
    """Whether ``text`` is surely shallow enough for libyaml: an upper bound of its
    nesting (brackets inside strings count too), computed without parsing."""
    data = np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)
    opening, closing = np.isin(data, _OPENING), np.isin(data, _CLOSING)
    steps = opening.astype(np.int32)[opening | closing] - closing.astype(np.int32)[opening | closing]
    if steps.size and int(np.cumsum(steps).max()) > _C_PARSER_MAX_BRACKETS:
        return False
    return max((len(m.group()) for m in _INDENT.finditer(text)), default=0) <= _C_PARSER_MAX_INDENT


class _DocumentTooLarge(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.node = node


def _measure(root: yaml.Node) -> None:
    """Raise :class:`_DocumentTooLarge` when ``root`` expands beyond the limits.
    Shared nodes (aliases) are counted once per use, computed once per node."""
    sizes: dict[int, tuple[int, int]] = {}  # node → (values, characters) once expanded
    # Iterative post-order walk: deep documents must not exhaust Python's stack.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    on_path: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1
            chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            for child in _children(node):
                values, text = sizes[id(child)]
                total += values
                chars += text
                if total > MAX_EXPANDED_NODES:
                    raise _DocumentTooLarge(
                        f"the document expands to more than {MAX_EXPANDED_NODES:,} values through YAML aliases", node
                    )
                if chars > MAX_EXPANDED_CHARS:
                    raise _DocumentTooLarge(
                        f"the document expands to more than {MAX_EXPANDED_CHARS:,} characters through YAML aliases", node
                    )
            sizes[key] = (total, chars)
            continue
        if key in sizes:
            continue
        if depth > MAX_DEPTH:
            raise _DocumentTooLarge(f"the document is nested more than {MAX_DEPTH} levels deep", node)
        if key in on_path:
            raise _DocumentTooLarge("the document refers to itself through an alias", node)
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _StrictPythonLoader(yaml.SafeLoader):
    def construct_document(self, node: yaml.Node) -> Any:
        _measure(node)
        return super().construct_document(node)


_StrictLoader: Any = _StrictPythonLoader
if getattr(yaml, "__with_libyaml__", False):

    class _StrictCLoader(yaml.CSafeLoader):
        def construct_document(self, node: yaml.Node) -> Any:
            _measure(node)
            return super().construct_document(node)

    _StrictLoader = _StrictCLoader


def _loader(text: str) -> Any:
    return _StrictLoader if _StrictLoader is not _StrictPythonLoader and _shallow(text) else _StrictPythonLoader


# Dates stay strings: no scenario or manifest field is a timestamp, and a label
# value such as 2026-01-01 must reach validation as the text it is.
_RESOLVERS = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return dict(loader.construct_mapping(node, deep=deep))


for _loader_class in {_StrictPythonLoader, _StrictLoader}:
    _loader_class.yaml_implicit_resolvers = _RESOLVERS
    _loader_class.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_BLOCK_HEADER = re.compile(r"^(?P<indent> *)(?P<key>[^\s#][^:]*):\s*\|[-+]?\s*(#.*)?$")


def _block_hint(text: str, line: int) -> str:
    """When the error follows a literal block (``80/TCP: |``) whose first line is
    indented deeper than the next ones (a matrix's header of destinations), how to
    write it: YAML takes the block's indentation from its first line, so the rows end
    it, unless the header says the indentation (``|2``)."""
    lines = text.splitlines()
    for start in range(min(line, len(lines) - 1), -1, -1):
        header = _BLOCK_HEADER.match(lines[start])
        if header is None:
            continue
        body = [text_line for text_line in lines[start + 1 : line + 1] if text_line.strip()]
        if len(body) < 2:
            return ""
        key_indent = len(header["indent"])
        first = len(body[0]) - len(body[0].lstrip(" "))
        rows = min(len(row) - len(row.lstrip(" ")) for row in body[1:])
        if first > rows > key_indent:
            key = header["key"].strip()
            return (
                f"; the block of {key} starts deeper than its next lines (a matrix's header), so YAML ends it "
                f"there: give its indentation, {key}: |{rows - key_indent}"
            )
        return ""
    return ""


def _error(source: str, err: yaml.YAMLError, text: str = "") -> ScenarioError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    hint = _block_hint(text, mark.line) if mark is not None and text else ""
    return ScenarioError(source, where, f"invalid YAML: {problem}{hint}")


def _too_large(source: str, err: _DocumentTooLarge) -> ScenarioError:
    mark = err.node.start_mark
    return ScenarioError(
        source,
        f"line {mark.line + 1}, column {mark.column + 1}",
        str(err),
        f"at most {MAX_EXPANDED_NODES:,} values, {MAX_EXPANDED_CHARS:,} characters and {MAX_DEPTH} levels",
    )


def read_text(path: Path, source: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(source, "", f"the file is {size:,} bytes", f"at most {MAX_FILE_BYTES:,} bytes")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, "", "file not found") from None
    except IsADirectoryError:
        raise ScenarioError(source, "", "is a directory", "a YAML file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(source, "", f"cannot read file: {err}") from None


def load_one(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_loader(text))  # noqa: S506 - a SafeLoader subclass
    except _DocumentTooLarge as err:
        raise _too_large(source, err) from None
    except yaml.YAMLError as err:
        raise _error(source, err, text) from None
    except RecursionError:
        raise ScenarioError(source, "", "the document is nested too deeply", f"at most {MAX_DEPTH} levels") from None
    except Exception as err:  # noqa: BLE001 - the parser's own bugs on odd input (explicit tags)
        raise ScenarioError(source, "", f"invalid YAML: {err}") from None


def load_all(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_loader(text)))  # noqa: S506
    except _DocumentTooLarge as err:
        raise _too_large(source, err) from None
    except yaml.YAMLError as err:
        raise _error(source, err, text) from None
    except RecursionError:
        raise ScenarioError(source, "", "the document is nested too deeply", f"at most {MAX_DEPTH} levels") from None
    except Exception as err:  # noqa: BLE001 - as in load_one
        raise ScenarioError(source, "", f"invalid YAML: {err}") from None
