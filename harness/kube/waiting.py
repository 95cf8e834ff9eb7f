"""Bounded, logged waits: poll a condition until it holds or a time limit passes.

A check that fails with a transient API error (no answer, 5xx, 429: the API server
restarting or overloaded, as it is while Calico rolls out) counts as "not yet", and
the wait goes on until its deadline, with the error as the last state seen. Any other
error ends the wait at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from harness.core.errors import BackendError
from harness.core.progress import Progress
from harness.kube.errors import KubeApiError

#: ``check()`` returns (done, what is still missing).
Check = Callable[[], tuple[bool, str]]


def wait_until(
    check: Check,
    *,
    limit: float,
    poll: float,
    message: str,
    progress: Progress,
    diagnostics: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``check`` every ``poll`` seconds for at most ``limit`` seconds. Progress
    is reported when the missing part changes; on time-out BackendError carries
    the last state and ``diagnostics()``."""
    started = time.monotonic()
    last = {"detail": ""}
    progress(message)

    def attempt() -> bool:
        try:
            done, detail = check()
        except KubeApiError as err:
            if not err.transient:
                raise
            done, detail = False, f"API server not answering: {err}"
        if not done and detail != last["detail"]:
            progress(f"{message}: {detail} ({time.monotonic() - started:.0f}s)")
        last["detail"] = detail
        return done

    retrying = Retrying(
        stop=stop_after_delay(limit), wait=wait_fixed(poll), retry=retry_if_result(lambda done: not done), reraise=True
    )
    try:
        retrying(attempt)
    except RetryError:
        try:
            extra = diagnostics()
        except KubeApiError as err:
            extra = f"(no diagnostics: {err})"
        raise BackendError(
            f"{message}: gave up after {limit:.0f}s ({last['detail']})" + (f"\n{extra}" if extra else "")
        ) from None
