"""The pinned versions in ``clusters/versions.env`` and the cluster recipes beside it.

``versions.env`` is the one place that pins tools and images; the e2e workflow
copies its ``KEY=VALUE`` lines into the job environment and the harness reads them
here, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from harness.core.errors import BackendUnavailable, HarnessError

#: Overrides where the cluster recipes are looked up (an installed copy of the
#: harness has no ``clusters/`` directory next to it).
CLUSTERS_ENV = "NETPOL_HARNESS_CLUSTERS"

# No quotes, spaces or shell expansion: the value must read the same to Python and to $GITHUB_ENV.
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=([^\s\"'$`\\]*)$")


def clusters_dir() -> Path:
    """The directory holding ``versions.env``, the kind config and the Calico recipes."""
    configured = os.environ.get(CLUSTERS_ENV)
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "clusters"
    if not (path / "versions.env").is_file():
        raise BackendUnavailable(
            f"the cluster recipes are missing: {path / 'versions.env'} does not exist. Run from a checkout of "
            f"netpol-harness (pip install -e .), or set {CLUSTERS_ENV} to the checkout's clusters/ directory"
        )
    return path


def parse_env_file(text: str, source: str = "versions.env") -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments are skipped. Anything else
    is an error, so that a line the workflow would read differently never passes."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise HarnessError(f"{source}:{number}: {raw!r} is not a KEY=VALUE line (no spaces or quotes)")
        key, value = match.groups()
        if key in values:
            raise HarnessError(f"{source}:{number}: {key} is set twice")
        values[key] = value
    return values


@dataclass(frozen=True)
class PinnedVersions:
    values: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def get(self, key: str) -> str:
        try:
            return self.values[key]
        except KeyError:
            raise HarnessError(f"clusters/versions.env does not set {key}") from None

    @property
    def kind_version(self) -> str:
        return self.get("KIND_VERSION")

    @property
    def kubectl_version(self) -> str:
        return self.get("KUBECTL_VERSION")

    @property
    def agnhost_image(self) -> str:
        return self.get("AGNHOST_IMAGE")

    @property
    def calico_manifests_url(self) -> str:
        return self.get("CALICO_MANIFESTS_URL").rstrip("/")

    def calico_version(self, minor: str) -> str:
        """The pinned patch release of a Calico minor version (``3.30`` → ``v3.30.7``)."""
        return self.get(calico_key(minor))

    def calico_minors(self) -> list[str]:
        """Minor versions with a pinned release, oldest first."""
        minors = [k.removeprefix("CALICO_").replace("_", ".") for k in self.values if re.fullmatch(r"CALICO_\d+_\d+", k)]
        return sorted(minors, key=minor_key)

    def node_image(self, calico_minor: str) -> str:
        """The kind node image for a cluster running this Calico minor version."""
        return self.values.get(f"KIND_NODE_IMAGE_{calico_key(calico_minor)}") or self.get("KIND_NODE_IMAGE")


def calico_key(minor: str) -> str:
    return "CALICO_" + minor.replace(".", "_")


def minor_key(minor: str) -> tuple[int, ...]:
    return tuple(int(part) for part in minor.split("."))


def load_versions(directory: Path | None = None) -> PinnedVersions:
    path = (directory or clusters_dir()) / "versions.env"
    return PinnedVersions(parse_env_file(path.read_text(encoding="utf-8"), str(path)))


def kubernetes_version_of(node_image: str) -> str:
    """``kindest/node:v1.33.4@sha256:...`` → ``v1.33.4``."""
    tag = node_image.split("@", 1)[0].rpartition(":")[2]
    return tag if re.fullmatch(r"v\d+\.\d+\.\d+.*", tag) else ""
