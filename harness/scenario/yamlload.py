"""YAML reading that refuses what PyYAML silently accepts (duplicate keys) and turns
every syntax error into a :class:`ScenarioError` naming the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import ScenarioError


class _StrictLoader(yaml.SafeLoader):
    pass


# Dates stay strings: no scenario or manifest field is a timestamp, and a label
# value such as 2026-01-01 must reach validation as the text it is.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
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
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _error(source: str, err: yaml.YAMLError) -> ScenarioError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ScenarioError(source, where, f"invalid YAML: {problem}")


def read_text(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(source, "", f"cannot read file: {err}") from None


def load_one(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise _error(source, err) from None
    except Exception as err:  # noqa: BLE001 - the parser's own bugs on odd input (explicit tags)
        raise ScenarioError(source, "", f"invalid YAML: {err}") from None


def load_all(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))  # noqa: S506
    except yaml.YAMLError as err:
        raise _error(source, err) from None
    except Exception as err:  # noqa: BLE001 - as in load_one
        raise ScenarioError(source, "", f"invalid YAML: {err}") from None
