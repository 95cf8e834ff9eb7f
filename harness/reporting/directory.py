"""The ``--report-dir`` directory: ``<scenario>.json`` and ``<scenario>.md`` per
scenario, ``index.html`` for the run."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import write_atomic
from harness.engine.verdict import Status
from harness.reporting.html import index_html
from harness.reporting.markdown import scenario_markdown
from harness.reporting.records import RunSummary, ScenarioRecord

INDEX = "index.html"


class ReportDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

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

    def stem(self, record: ScenarioRecord) -> str:
        """A file name for the scenario, the same whatever order records arrive in
        (pytest-xdist workers finish in any order): a scenario that ran is named
        after itself (names are unique in a run); one that stopped before probing
        (an invalid file, whose name is its file's) gets a hash of its node id too,
        as two such files may share a name."""
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", record.name).lstrip(".") or "scenario"
        if (record.ran or record.status is not Status.ERROR) and base != "index":
            return base
        digest = hashlib.sha256(record.nodeid.encode()).hexdigest()[:8]
        return f"{base}-{digest}"

    def write_scenario(self, record: ScenarioRecord) -> tuple[Path, Path]:
        stem = self.stem(record)
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
