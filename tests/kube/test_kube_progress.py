"""Progress of long steps: a heartbeat repeats its message until the step ends."""

from __future__ import annotations

import threading
import time

import pytest

from harness.kube.progress import heartbeat, reporter


def test_heartbeat_repeats_with_elapsed_time_and_stops() -> None:
    messages: list[str] = []
    with heartbeat(messages.append, "creating kind cluster x", interval=0.05):
        time.sleep(0.22)  # the slow step being reported on
    count = len(messages)
    time.sleep(0.15)
    assert messages[0] == "creating kind cluster x"
    assert count >= 3 and all(m.startswith("creating kind cluster x (") and m.endswith("s)") for m in messages[1:])
    assert len(messages) == count  # nothing after the block
    assert not any(t.name == "netpol-heartbeat" for t in threading.enumerate())


def test_reporter_logs_and_forwards(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    with caplog.at_level("INFO", logger="harness.kube"):
        reporter(seen.append)("Calico v3.31.7 is available")
        reporter(None)("only logged")
    assert seen == ["Calico v3.31.7 is available"]
    assert [r.getMessage() for r in caplog.records] == ["Calico v3.31.7 is available", "only logged"]


def test_progress_is_the_runners_callback_type() -> None:
    from harness.core.progress import Progress
    from harness.kube import progress

    assert progress.Progress is Progress
