"""Where a scenario and the files it refers to are read from: the working tree, or a git
revision read with git itself (``git ls-tree``, ``git cat-file``), without checking it out.

Both sources take the paths the loader builds (a scenario's path as given, relative to
the working directory or absolute, and policy paths joined to the scenario's
directory) and answer for the same path as it is in the working tree or as it was at
the revision. A file that does not exist at the revision is absent, not an error, so a
scenario or policy file new in the working tree reads as new. Inside the revision,
symbolic links are followed as git stores them, within the repository.

Every read is bounded (:data:`DEFAULT_MAX_BYTES` per file, :data:`GIT_TIMEOUT` per git
call) and every failure is a :class:`ScenarioError` naming the file as
``REVISION:path`` or a :class:`RevisionError` saying what is wrong with the repository
or the revision.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Protocol

from harness.core.errors import RevisionError, ScenarioError

#: Largest file either source reads: scenarios and policy manifests are small; a
#: larger file is almost certainly not one, and reading it would only cost memory.
DEFAULT_MAX_BYTES = 2 * 1024 * 1024
#: Longest a single git command may take.
GIT_TIMEOUT = 30.0
#: Symbolic links followed in a row before a path is taken for a loop.
_MAX_LINKS = 8

_BLOB_MODES = ("100644", "100755")
_LINK_MODE = "120000"


class FileSource(Protocol):
    """Read-only access to files, by the paths the loader builds."""

    @property
    def label(self) -> str:
        """What the source is, for messages: ``working tree``, ``main (1a2b3c4d5e6f)``."""
        ...

    def display(self, path: Path) -> str:
        """How to name ``path`` of this source in a message."""
        ...

    def read_text(self, path: Path) -> str:
        """The file's text (UTF-8); ScenarioError when absent, too large or unreadable."""
        ...

    def exists(self, path: Path) -> bool: ...

    def is_file(self, path: Path) -> bool: ...

    def is_dir(self, path: Path) -> bool: ...

    def iterdir(self, directory: Path) -> tuple[Path, ...]:
        """Entries of a directory, sorted by name; ``()`` when it is not one."""
        ...

    def glob(self, directory: Path, pattern: str) -> tuple[Path, ...]:
        """Entries of ``directory`` whose name matches the shell pattern ``pattern``
        (one path segment, such as ``*.yaml``), sorted."""
        ...


def relative_to_scenario(scenario: Path, reference: str) -> Path:
    """A path written in a scenario (``policies/db.yaml``, ``../deploy/np.yaml``) as the
    loader looks it up: relative to the scenario's directory, ``..`` resolved by name,
    as git and the scenario's author read it."""
    return Path(os.path.normpath(scenario.parent / reference))


def _too_large(size: int, limit: int) -> str:
    return f"the file has {size:,} bytes, more than the limit of {limit:,}"


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(where, "", f"cannot read file: not UTF-8 text ({err.reason} at byte {err.start})") from None


class WorkingTree:
    """Files as they are on disk."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes

    @property
    def label(self) -> str:
        return "working tree"

    def display(self, path: Path) -> str:
        return str(path)

    def read_text(self, path: Path) -> str:
        where = self.display(path)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self.max_bytes:
                    raise ScenarioError(where, "", _too_large(size, self.max_bytes))
                data = handle.read(self.max_bytes + 1)
        except FileNotFoundError:
            raise ScenarioError(where, "", "file not found") from None
        except IsADirectoryError:
            raise ScenarioError(where, "", "is a directory, not a file") from None
        except OSError as err:
            raise ScenarioError(where, "", f"cannot read file: {err.strerror or err}") from None
        if len(data) > self.max_bytes:  # grew while being read
            raise ScenarioError(where, "", _too_large(len(data), self.max_bytes))
        return _decode(data, where)

    def exists(self, path: Path) -> bool:
        try:
            return path.exists()
        except OSError:  # a name too long for the file system, for one
            return False

    def is_file(self, path: Path) -> bool:
        try:
            return path.is_file()
        except OSError:
            return False

    def is_dir(self, path: Path) -> bool:
        try:
            return path.is_dir()
        except OSError:
            return False

    def iterdir(self, directory: Path) -> tuple[Path, ...]:
        try:
            return tuple(sorted(directory.iterdir(), key=lambda p: p.name))
        except OSError:
            return ()

    def glob(self, directory: Path, pattern: str) -> tuple[Path, ...]:
        return tuple(p for p in self.iterdir(directory) if fnmatch.fnmatchcase(p.name, pattern))


@dataclass(frozen=True)
class _Entry:
    mode: str
    type: str  # blob, tree or commit (a submodule)
    oid: str
    size: int | None

    @property
    def is_file(self) -> bool:
        return self.type == "blob" and self.mode in _BLOB_MODES

    @property
    def is_dir(self) -> bool:
        return self.type == "tree"


class GitRevision:
    """Files as they are at a git revision of the repository holding ``repository``
    (a directory or a file in it; the working directory by default)."""

    def __init__(self, revision: str, repository: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.revision = revision
        self.max_bytes = max_bytes
        start = Path(repository) if repository is not None else Path.cwd()
        if start.is_file():
            start = start.parent
        if not start.is_dir():
            raise RevisionError(f"{start} is not a directory, so it is not in a git repository")
        top = self._git(["rev-parse", "--show-toplevel"], cwd=start, what=f"find the git repository of {start}").strip()
        self.root = Path(os.path.realpath(top))
        if not revision or revision.startswith("-") or "\0" in revision:
            raise RevisionError(f"{revision!r} is not a revision (a branch, tag or commit such as main or HEAD~1)")
        found = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"])
        if found.returncode != 0:
            raise RevisionError(self._unknown_revision())
        self.commit = found.stdout.decode().strip()
        self._listings: dict[PurePosixPath, dict[str, _Entry]] = {}
        self._renames: Mapping[Path, Path] | None = None

    # -- git -------------------------------------------------------------------------

    @staticmethod
    def _environment() -> dict[str, str]:
        env = dict(os.environ)
        # Names are paths, never patterns; messages in one language; never prompt.
        env.update(GIT_LITERAL_PATHSPECS="1", LC_ALL="C", GIT_TERMINAL_PROMPT="0")
        return env

    def _run(self, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        command = ["git", "-C", str(cwd or self.root), *args]
        try:
            return subprocess.run(
                command,
                capture_output=True,
                timeout=GIT_TIMEOUT,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise RevisionError("git is not installed (or not on PATH): it is needed to read files at a revision") from None
        except subprocess.TimeoutExpired:
            raise RevisionError(f"git {' '.join(args[:2])} took more than {GIT_TIMEOUT:.0f} s in {cwd or self.root}") from None

    def _git(self, args: list[str], cwd: Path | None = None, what: str = "") -> str:
        result = self._run(args, cwd)
        if result.returncode != 0:
            said = result.stderr.decode(errors="replace").strip().splitlines()
            reason = said[-1] if said else f"exit status {result.returncode}"
            if "not a git repository" in reason:
                raise RevisionError(f"{cwd or self.root} is not in a git repository")
            raise RevisionError(f"cannot {what or 'run git ' + args[0]}: {reason}")
        return result.stdout.decode(errors="surrogateescape")

    def _unknown_revision(self) -> str:
        message = f"unknown revision {self.revision!r} in the git repository {self.root}"
        shallow = self._run(["rev-parse", "--is-shallow-repository"])
        if shallow.returncode == 0 and shallow.stdout.strip() == b"true":
            message += (
                "; this is a shallow clone, which may lack it: fetch it first "
                "(git fetch origin REF, or actions/checkout with fetch-depth: 0)"
            )
        return message

    def _listing(self, directory: PurePosixPath) -> dict[str, _Entry]:
        """Entries of a directory of the revision (cached), by name."""
        cached = self._listings.get(directory)
        if cached is not None:
            return cached
        args = ["ls-tree", "-z", "-l", "--full-tree", self.commit]
        if directory != PurePosixPath("."):
            args += ["--", f"{directory}/"]
        out = self._git(args, what=f"list {directory} at {self.revision}")
        entries: dict[str, _Entry] = {}
        for record in out.split("\0"):
            if not record:
                continue
            meta, _, name = record.partition("\t")
            mode, kind, oid, size = meta.split(maxsplit=3)
            entries[posixpath.basename(name)] = _Entry(mode, kind, oid, int(size) if size.strip().isdigit() else None)
        self._listings[directory] = entries
        return entries

    def _blob(self, oid: str) -> bytes:
        result = self._run(["cat-file", "blob", oid])
        if result.returncode != 0:
            raise RevisionError(f"git cat-file blob {oid} failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    # -- paths -----------------------------------------------------------------------

    def repo_path(self, path: Path) -> PurePosixPath:
        """``path`` relative to the repository's root, as git names it. Raises
        ScenarioError for a path outside the repository."""
        absolute = Path(os.path.abspath(path))
        for candidate in (absolute, Path(os.path.realpath(absolute))):
            try:
                return PurePosixPath(candidate.relative_to(self.root).as_posix())
            except ValueError:
                continue
        raise ScenarioError(str(path), "", f"is outside the git repository {self.root}, so it cannot be read at {self.revision}")

    def _resolve(self, path: PurePosixPath) -> tuple[PurePosixPath, _Entry | None]:
        """Follow the path's components (and symbolic links) through the revision's
        trees; the entry is None when nothing is there."""
        parts = list(path.parts) if path != PurePosixPath(".") else []
        done = PurePosixPath(".")
        links = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if done == PurePosixPath("."):
                    return path, None  # leaves the repository
                done = done.parent
                continue
            entry = self._listing(done).get(name)
            if entry is None:
                return path, None
            if entry.mode == _LINK_MODE:
                links += 1
                if links > _MAX_LINKS:
                    return path, None
                target = self._blob(entry.oid).decode(errors="surrogateescape")
                if target.startswith("/"):
                    return path, None  # points outside the revision's tree
                parts = list(PurePosixPath(target).parts) + parts
                continue
            done = done / name
            if parts and not entry.is_dir:
                return path, None
            if not parts:
                return done, entry
        return done, _Entry("040000", "tree", "", None)

    def _entry(self, path: Path) -> _Entry | None:
        return self._resolve(self.repo_path(path))[1]

    # -- the FileSource protocol -----------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.revision} ({self.commit[:12]})"

    def display(self, path: Path) -> str:
        try:
            return f"{self.revision}:{self.repo_path(path)}"
        except ScenarioError:
            return f"{self.revision}:{path}"

    def read_text(self, path: Path) -> str:
        where = self.display(path)
        entry = self._entry(path)
        if entry is None:
            raise ScenarioError(where, "", f"file not found: it does not exist at {self.label}")
        if entry.is_dir:
            raise ScenarioError(where, "", "is a directory, not a file")
        if not entry.is_file:
            raise ScenarioError(where, "", f"is not a file at {self.revision} (git mode {entry.mode}, a {entry.type})")
        if entry.size is not None and entry.size > self.max_bytes:
            raise ScenarioError(where, "", _too_large(entry.size, self.max_bytes))
        data = self._blob(entry.oid)
        return _decode(data, where)

    def _entry_or_none(self, path: Path) -> _Entry | None:
        try:
            return self._entry(path)
        except ScenarioError:  # outside the repository
            return None

    def exists(self, path: Path) -> bool:
        return self._entry_or_none(path) is not None

    def is_file(self, path: Path) -> bool:
        entry = self._entry_or_none(path)
        return entry is not None and entry.is_file

    def is_dir(self, path: Path) -> bool:
        entry = self._entry_or_none(path)
        return entry is not None and entry.is_dir

    def iterdir(self, directory: Path) -> tuple[Path, ...]:
        try:
            resolved, entry = self._resolve(self.repo_path(directory))
        except ScenarioError:
            return ()
        if entry is None or not entry.is_dir:
            return ()
        return tuple(directory / name for name in sorted(self._listing(resolved)))

    def glob(self, directory: Path, pattern: str) -> tuple[Path, ...]:
        return tuple(p for p in self.iterdir(directory) if fnmatch.fnmatchcase(p.name, pattern))

    # -- history ---------------------------------------------------------------------

    def renames(self) -> Mapping[Path, Path]:
        """Files renamed since the revision, as git detects renames between it and the
        working tree (tracked files, committed or not): new path → old path, both
        absolute. Untracked files are not seen by git and are never in it."""
        if self._renames is None:
            out = self._git(
                ["diff", "-M", "--name-status", "-z", "--no-ext-diff", "--no-textconv", self.commit, "--"],
                what=f"compare the working tree with {self.revision}",
            )
            fields = out.split("\0")
            renames: dict[Path, Path] = {}
            i = 0
            while i < len(fields) and fields[i]:
                status = fields[i]
                if status.startswith(("R", "C")):
                    old, new = fields[i + 1], fields[i + 2]
                    if status.startswith("R"):
                        renames[self.root / new] = self.root / old
                    i += 3
                else:
                    i += 2
            self._renames = MappingProxyType(renames)
        return self._renames

    def renamed_from(self, path: Path) -> Path | None:
        """The path ``path`` had at the revision, when git sees it as renamed since."""
        return self.renames().get(self.root / self.repo_path(path))
