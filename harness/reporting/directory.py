"""The ``--report-dir`` directory: ``<scenario>.json`` and ``<scenario>.md`` per
scenario, ``index.html`` for the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import write_atomic
from harness.reporting.html import index_html
from harness.reporting.markdown import scenario_markdown
from harness.reporting.records import RunSummary, ScenarioRecord

INDEX = "index.html"


class ReportDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stems: dict[str, str] = {}

    def prepare(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HarnessError(f"cannot create the report directory {self.path}: {err.strerror or err}") from None
        if not self.path.is_dir():
            raise HarnessError(f"the report directory {self.path} exists and is not a directory")

    @property
    def index(self) -> Path:
        return self.path / INDEX

    def stem(self, key: str, name: str) -> str:
        """A file name for the scenario ``key`` (its node id), unique in this run:
        two broken files may share a name."""
        if key in self._stems:
            return self._stems[key]
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "scenario"
        stem, n = base, 1
        taken = set(self._stems.values())
        while stem in taken or stem == "index":
            n += 1
            stem = f"{base}-{n}"
        self._stems[key] = stem
        return stem

    def write_scenario(self, key: str, record: ScenarioRecord) -> tuple[Path, Path]:
        stem = self.stem(key, record.name)
        json_path = self.path / f"{stem}.json"
        md_path = self.path / f"{stem}.md"
        _write(json_path, json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n")
        _write(md_path, scenario_markdown(record))
        return json_path, md_path

    def write_index(self, summary: RunSummary) -> Path:
        _write(self.index, index_html(summary))
        return self.index


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a browser or CI step never reads half a file."""
    try:
        write_atomic(path, text)
    except OSError as err:
        raise HarnessError(f"cannot write report {path}: {err.strerror or err}") from None
