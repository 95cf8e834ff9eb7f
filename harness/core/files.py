"""Files: written so that an interrupted run never leaves half of one behind, and
shown relative to where the user started the run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place.
    Raises OSError; the caller says what the file was for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def display_path(path: Path) -> Path:
    """``path`` relative to the working directory when below it, so that messages and
    reproduce commands are short and can be pasted where pytest was started."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
