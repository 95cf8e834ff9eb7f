"""Option values written after a space (``--kubeconfig ~/.kube/config``) must not
decide which ini file pytest reads.

pytest finds its rootdir and ini file before it loads plugins (``Config.parse``:
``determine_setup`` runs on the arguments as pytest alone understands them, then
the ``pytest11`` entry points are loaded). A plugin option's value given as a
separate word is then taken for a test path, and when it lies outside the project
the project's ini file (and its ``netpol_*`` settings) is not read: pytest
documents this for plugin options that take paths (pytest-dev/pytest#1435, "Finding
the rootdir" in pytest's documentation). So once every plugin's options are known,
the harness checks the command line; if such a value sent pytest's search outside
the directory it was started in, it starts pytest again, once, with each of those
options written ``--option=value``, which pytest reads the same way but cannot take
for a path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

#: Set in the environment of the restarted pytest, so that it never restarts again.
RESTARTED = "NETPOL_HARNESS_ARGS_JOINED"


def joined_option_values(args: Sequence[str], parser: pytest.Parser) -> list[str]:
    """``args`` with every ``--option value`` of an option that takes a value written
    ``--option=value`` (what argparse reads identically)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        following = args[i + 1] if i + 1 < len(args) else None
        if word == "--":
            out.extend(args[i:])
            break
        if word.startswith("--") and "=" not in word and following is not None and not following.startswith("-"):
            if _takes_value(parser, word, following):
                out.append(f"{word}={following}")
                i += 2
                continue
        out.append(word)
        i += 1
    return out


def _takes_value(parser: pytest.Parser, option: str, value: str) -> bool:
    """Whether ``option value`` is one option with its value (not an option followed
    by a test path), asked of pytest's parser with every plugin's options."""
    try:
        namespace = parser.parse_known_args([option, value])
    except (SystemExit, pytest.UsageError):
        return False
    return value not in (getattr(namespace, "file_or_dir", None) or [])


def misread_values(args: Sequence[str], joined: Sequence[str], invocation_dir: Path) -> list[str]:
    """The option values pytest would have taken for paths outside ``invocation_dir``
    (only those can move its rootdir away from the project)."""
    found = []
    for word in joined:
        if not word.startswith("--") or "=" not in word or word in args:
            continue
        value = word.split("=", 1)[1]
        path = (invocation_dir / value).expanduser()
        if path.exists() and not path.resolve().is_relative_to(invocation_dir.resolve()):
            found.append(word)
    return found


def restart_if_misread(config: pytest.Config, parser: pytest.Parser) -> None:
    """Start pytest again with the values joined, when pytest may have read the wrong
    ini file; only for a ``pytest`` process run from a shell (not ``pytest.main``
    inside another program, nor a pytest-xdist worker)."""
    args = list(config.invocation_params.args)
    if os.environ.get(RESTARTED) or os.environ.get("PYTEST_XDIST_WORKER") or args != sys.argv[1:]:
        return
    joined = joined_option_values(args, parser)
    if joined == args or not misread_values(args, joined, config.invocation_params.dir):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        # pytest already captures fds 1 and 2 (for conftest imports): give them back,
        # or the restarted pytest would write into the capture files.
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[RESTARTED] = "1"
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *joined])
