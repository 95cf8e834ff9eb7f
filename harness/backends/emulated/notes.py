"""What the emulated backend tells the user about networks it keeps or removes:
after the session, and next to the reproduce commands of a failure."""

from __future__ import annotations

from collections.abc import Sequence

#: How to remove kept networks, for the message printed after the session.
CLEANUP_COMMAND = "python -m harness cleanup"


def kept_notice(runs: Sequence[str]) -> str:
    """What to print after a session that kept networks (``runs``: their names)."""
    if not runs:
        return ""
    listed = ", ".join(runs)
    return (
        f"kept the emulated network{'s' if len(runs) > 1 else ''} {listed} and {'their' if len(runs) > 1 else 'its'} "
        f"servers: the reproduce commands run as root; remove {'them' if len(runs) > 1 else 'it'} with "
        f"`sudo {CLEANUP_COMMAND}`"
    )


#: What the failure output says next to reproduce commands when the network is not kept.
NETWORK_GONE_NOTE = (
    "the emulated network was removed at the end of the session; to run these commands, run again with "
    f"--keep-network (then remove it with `sudo {CLEANUP_COMMAND}`)"
)
