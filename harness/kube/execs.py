"""Several execs at once, and what happens when the user presses Ctrl-C meanwhile.

The workers run the execs; the calling thread waits for their results. Ctrl-C reaches
the calling thread only: the execs that have not started are cancelled, ``interrupt``
closes the streams that are open (their workers return at once), the workers are
joined, and the KeyboardInterrupt goes on, so the run is reported as interrupted and
its cleanup runs with no exec left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from harness.kube.api import ExecRequest, ExecResult


def run_concurrently(
    run: Callable[[ExecRequest], ExecResult],
    requests: Sequence[ExecRequest],
    workers: int,
    interrupt: Callable[[], None],
) -> list[ExecResult]:
    if not requests:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(requests))), thread_name_prefix="netpol-exec")
    futures: list[Future[ExecResult]] = [pool.submit(run, request) for request in requests]
    try:
        results = [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
