"""The error of a failed Kubernetes API call: what the harness tried, against which
API server, and what came back, with the HTTP status kept so that callers can tell
a passing fault (a reset connection, 5xx, 429) from an answer that will not change.
"""

from __future__ import annotations

from harness.core.errors import BackendError

#: Statuses an API server (or the load balancer in front of it) answers while it is
#: overloaded or restarting: retrying within a deadline can succeed.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class KubeApiError(BackendError):
    """``status`` is the HTTP status of the answer, None when none came (refused,
    reset, timed out) or the reply was not the API's. ``transient``: the same call
    may succeed if repeated shortly (no answer, or a status in TRANSIENT_STATUSES)."""

    def __init__(
        self,
        what: str,
        explanation: str,
        *,
        status: int | None = None,
        reason: str = "",
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.what = what
        self.explanation = explanation
        self.status = status
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after
        super().__init__(f"cannot {what}: {explanation}")


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a Kubernetes API failure worth retrying."""
    return isinstance(error, KubeApiError) and error.transient
