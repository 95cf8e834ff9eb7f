"""Loading nftables scripts with libnftables, the library behind ``nft``, inside
this process.

Every probe round starts with a ruleset load, and a load through the ``nft``
command costs far more than its work: the process (libraries, start-up) and,
worse, its exit. A load that removes anything (each one but a network's first
deletes the table it replaces) leaves the kernel reclaiming the old objects in a
work item that waits for an RCU grace period, and when ``nft`` closes its netlink
socket the kernel waits for that work to finish (linux
net/netfilter/nf_tables_api.c: ``nft_rcv_nl_event`` on NETLINK_URELEASE calls
``nf_tables_trans_destroy_flush_work``), about 11 ms here for every load. A
context kept open for the whole deployment never closes its socket between
loads, so a load takes what the transaction takes (0.5 ms for a small table
against 15 ms through ``nft``).

The context's socket belongs to the network namespace it was created in
(``nft_ctx_new`` opens it), and libnftables may open it again after an
interrupted dump, so every call runs in a thread inside the namespace: nothing
can reach the host's own ruleset. The calls are those of libnftables.h (the
nftables project's include/nftables/libnftables.h); the project's own Python
binding, a ctypes wrapper of the same calls, is not published on PyPI, so the
few it needs are declared here.
"""

from __future__ import annotations

import ctypes
import threading
from functools import cache

from harness.backends.emulated.netns import call_in_netns
from harness.core.errors import BackendError

LIBRARY = "libnftables.so.1"
#: Print what each command created, as ``nft --echo`` does (libnftables.h).
_OUTPUT_ECHO = 1 << 5


@cache
def _library() -> ctypes.CDLL:
    """libnftables with the signatures of the calls used here (loaded once)."""
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as err:
        raise BackendError(f"cannot load {LIBRARY} (apt-get install libnftables1): {err}") from None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def available() -> str | None:
    """None when libnftables can be loaded, else why not."""
    try:
        _library()
    except BackendError as err:
        return str(err)
    return None


class NftContext:
    """One libnftables context inside network namespace ``netns``, its output and
    errors buffered, echoing what each command creates."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._lib = _library()
        #: Held by each call and by close(): a call still running in its thread
        #: (its caller interrupted) finishes before the context is freed.
        self._lock = threading.Lock()
        try:
            context = call_in_netns(netns, lambda: self._lib.nft_ctx_new(0))
        except OSError as err:
            raise BackendError(f"cannot enter network namespace {netns} for nftables: {err.strerror or err}") from None
        if not context:
            raise BackendError(f"libnftables could not make a context in network namespace {netns}")
        self._context: int | None = context
        self._lib.nft_ctx_buffer_output(context)
        self._lib.nft_ctx_buffer_error(context)
        self._lib.nft_ctx_output_set_flags(context, _OUTPUT_ECHO)

    def run(self, script: str, what: str) -> str:
        """Run ``script`` as one transaction (as ``nft --echo -f -`` would); what it
        printed, or a :class:`BackendError` naming ``what`` with nft's errors."""
        data = script.encode()

        def call() -> tuple[int, bytes, bytes]:
            with self._lock:
                if self._context is None:
                    raise BackendError(f"{what}: the nftables context of {self.netns} is closed")
                code = self._lib.nft_run_cmd_from_buffer(self._context, data)
                output = self._lib.nft_ctx_get_output_buffer(self._context) or b""
                errors = self._lib.nft_ctx_get_error_buffer(self._context) or b""
                return code, output, errors

        try:
            code, output, errors = call_in_netns(self.netns, call)
        except OSError as err:
            raise BackendError(f"{what}: cannot enter network namespace {self.netns}: {err.strerror or err}") from None
        if code != 0:
            detail = errors.decode(errors="replace").strip() or f"libnftables returned {code}"
            raise BackendError(f"{what}: nftables refused the script: {detail}")
        return output.decode(errors="replace")

    def close(self) -> None:
        with self._lock:
            context, self._context = self._context, None
            if context is not None:
                self._lib.nft_ctx_free(context)
