"""Scenario files as pytest collectors and scenarios as test items."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.backends.variants import DEFAULT_VARIANT, BackendVariant
from harness.core.errors import ScenarioError
from harness.core.files import display_path
from harness.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from harness.plugin.session import NetpolPlugin


class ScenarioFailure(Exception):
    """A scenario's verdict is a failure; ``str()`` is the verdict's message."""


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        plugin: NetpolPlugin = self.config.stash[plugin_key]
        try:
            scenario = load_scenario(display_path(self.path))
        except ScenarioError as err:
            # Reported against this file; the other scenarios still run.
            yield BrokenScenarioItem.from_parent(self, name=self.path.stem, error=err)
            return
        for variant in plugin.manager.variants:
            name = f"{scenario.name}[{variant.label}]" if variant.label else scenario.name
            item = ScenarioItem.from_parent(self, name=name, scenario=scenario, variant=variant)
            item.add_marker(pytest.mark.netpol)
            for tag in scenario.tags:
                item.extra_keyword_matches.add(tag)
            yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, variant: BackendVariant = DEFAULT_VARIANT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.variant = variant

    def runtest(self) -> None:
        self.config.stash[plugin_key].run_item(self)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        # An expected failure (pytest.xfail) is reported by its reason, which names
        # the wrong cells; pytest would otherwise render the harness's own traceback,
        # reading and parsing the source of every frame, for a report nobody sees.
        if isinstance(excinfo.value, (ScenarioFailure, pytest.xfail.Exception)):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.scenario.name}: {self.scenario.description}"


class BrokenScenarioItem(pytest.Item):
    """A scenario file that could not be loaded: fails with the loader's message
    (its record's status is "error": nothing was probed)."""

    def __init__(self, *, error: ScenarioError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise ScenarioFailure(f"invalid scenario: {self.error}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"invalid scenario {self.path.name}"


def scenario_name(item: pytest.Item) -> str | None:
    if isinstance(item, ScenarioItem):
        return item.scenario.name
    if isinstance(item, BrokenScenarioItem):
        return item.name
    return None


# Set by the plugin module; here to avoid an import cycle.
plugin_key = pytest.StashKey["NetpolPlugin"]()
