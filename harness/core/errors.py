"""The harness's own exceptions.

Every error a user can cause (a malformed scenario, a policy the API server would
reject, a missing tool) is one of these, and each carries enough context to be
printed as one paragraph without a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class ScenarioError(HarnessError):
    """A scenario or a manifest it refers to is malformed.

    ``source`` is the file, ``field`` the path inside it (``steps[1].expect.rules[0].to``)
    and ``expected`` says what would have been accepted.
    """

    def __init__(self, source: str, field: str, message: str, expected: str = "") -> None:
        self.source = source
        self.field = field
        self.message = message
        self.expected = expected
        #: Where the file is referred to, when it is not the scenario itself
        #: (``policies[0] of scenarios/db.yaml``).
        self.context = ""
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        text = f"{where}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        if self.context:
            text += f"; the file is {self.context}"
        return text

    def referenced_at(self, context: str) -> ScenarioError:
        """This error, saying where the file it is about is referred to."""
        self.context = context
        self.args = (self.render(),)
        return self


class PolicyError(ScenarioError):
    """A policy that its API server would reject (or that the harness cannot model).

    ``kind`` names the resource (``NetworkPolicy``, ``StagedNetworkPolicy``...);
    ``detail`` is the message without the kind and the policy's name."""

    def __init__(
        self, source: str, policy: str, field: str, message: str, expected: str = "", kind: str = "NetworkPolicy"
    ) -> None:
        self.policy = policy
        self.kind = kind
        self.detail = message
        super().__init__(source, field, f"{kind} {policy}: {message}", expected)


class UnsupportedPolicy(HarnessError):
    """A valid policy uses a field the selected backend cannot enforce (a node peer
    where there are no nodes, domain names where there is no DNS, ...). Raised
    instead of ignoring the field, which would make a test pass without testing."""

    def __init__(self, backend: str, source: str, policy: str, field: str, reason: str) -> None:
        self.backend = backend
        self.source = source
        self.policy = policy
        self.field = field
        self.reason = reason
        super().__init__(f"{source}: {policy}: {field}: backend {backend} cannot enforce this: {reason}")


class RevisionError(HarnessError):
    """Files cannot be read at a git revision: not a repository, unknown revision, git missing."""


class UnknownName(HarnessError, KeyError):
    """A namespace, pod or endpoint that the topology does not declare. Also a
    KeyError, since it is a failed lookup."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BackendUnavailable(HarnessError):
    """The selected backend cannot run on this machine (missing tool, no root, ...).

    The message says what is missing and how to get it.
    """


class BackendError(HarnessError):
    """A backend operation failed while the scenario was running."""


class BaselineError(HarnessError):
    """A baseline file is missing, unreadable, or was written for something else."""


def describe_value(raw: object) -> str:
    """What a value of the wrong type is, for an error message: ``number 3``,
    ``string 'x'``, ``a list``, ``nothing``."""
    if raw is None:
        return "nothing"
    if isinstance(raw, bool):
        return f"boolean {raw}"
    if isinstance(raw, int | float):
        return f"number {raw}"
    if isinstance(raw, str):
        return f"string {raw!r}" if len(raw) < 40 else "a string"
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, Mapping):
        return "a mapping"
    return type(raw).__name__
