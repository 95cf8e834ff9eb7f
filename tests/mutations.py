"""Mutating a valid document at random for the fuzz tests: a few of its places
replaced with junk, deleted, renamed, wrapped in a list or a mapping, or
duplicated."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

ACTIONS = ["replace", "replace", "delete", "rename", "wrap", "duplicate"]


def document_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document tree (the root excluded)."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from document_paths(child, (*prefix, key))


def mutate(
    draw: st.DrawFn,
    seed: Any,
    rounds: int,
    junk: st.SearchStrategy[Any],
    keys: st.SearchStrategy[Any],
) -> Any:
    """A copy of ``seed`` with ``rounds`` places changed, each by one of
    :data:`ACTIONS` (``junk``: what replaces a value, ``keys``: new keys). A
    duplicate goes at the end of a list, or under a new key of a mapping."""
    doc = copy.deepcopy(seed)
    for _ in range(rounds):
        paths = list(document_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = draw(st.sampled_from(ACTIONS))
        if action == "replace":
            parent[last] = draw(junk)
        elif action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
        elif action == "wrap":
            parent[last] = [parent[last]] if draw(st.booleans()) else {draw(keys): parent[last]}
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif action == "duplicate":
            parent[draw(keys)] = copy.deepcopy(parent[last])
    return doc
