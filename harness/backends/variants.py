"""Backend variants: the same scenarios run once per CNI version in one pytest run.

A variant is a set of backend options laid over the command line's (for kind, one
``--calico-version``). Pure: no pytest, no cluster client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import OptionSource


@dataclass(frozen=True)
class BackendVariant:
    """``label`` goes into test ids (``default-deny[calico-3.31]``); ``options``
    override the command line's backend options."""

    label: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


DEFAULT_VARIANT = BackendVariant("")


def calico_variants(
    versions: Sequence[str] | None, cluster_name: str | None, separate_clusters: bool = True
) -> list[BackendVariant]:
    """One variant per ``--calico-version``; a single version needs none. With
    ``separate_clusters`` each variant gets its own cluster name, so a kept cluster is
    reused by its version; without, one cluster is upgraded from each to the next."""
    if not versions or len(versions) < 2:
        return [DEFAULT_VARIANT]
    base = cluster_name or "netpol-harness"
    variants = []
    for version in versions:
        options: dict[str, Any] = {"calico_version": [version]}
        if separate_clusters:
            options["cluster_name"] = f"{base}-" + re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")
        variants.append(BackendVariant(f"calico-{version}", options))
    return variants


class VariantOptions:
    """An :class:`~harness.backends.base.OptionSource` with a variant's options on top."""

    def __init__(self, base: OptionSource, variant: BackendVariant) -> None:
        self.base = base
        self.variant = variant

    def getoption(self, name: str, default: Any = None) -> Any:
        if name in self.variant.options:
            return self.variant.options[name]
        return self.base.getoption(name, default)
