"""The in-pod probe round: the script, its arguments, and its output read back into
observations.

One exec per source pod runs ``probe.sh`` with every probe of that pod. Each probe
is a client command line built by :mod:`harness.core.probe_clients`, the same curl
(TCP) and OpenBSD netcat (UDP) as on the emulated backend, and its result is read by
the same classifier, so a cell means the same on both backends and its reproduce
line uses the same tool. SCTP, which neither client speaks, uses ``agnhost connect``,
whose error output starts with TIMEOUT, REFUSED, DNS, UNKNOWN or OTHER (kubernetes
test/images/agnhost/connect). A probe without its result line is an error, never a
silent "blocked".
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

from harness.core.matrix import Observation, Outcome
from harness.core.probe_clients import classify, client_argv, client_wait, shell_line
from harness.core.topology import Protocol

MARKER = "NPH"
#: ``$0`` of the script: what ``ps`` shows in the pod.
SCRIPT_NAME = "netpol-harness-probe"
#: Probes one pod runs at once: each is a short-lived client process.
DEFAULT_PARALLEL = 32
#: The agnhost binary in the probe image.
AGNHOST = "/agnhost"


def script_text() -> str:
    return resources.files("harness.kube").joinpath("probe.sh").read_text(encoding="utf-8")


@dataclass(frozen=True)
class ProbeTarget:
    """One probe as the script sees it: an id local to this round."""

    id: int
    protocol: Protocol
    address: str
    port: int
    #: ``address`` is a name the client resolves (a Service's ``name.namespace``).
    resolve: bool = False


def agnhost_argv(address: str, port: int, timeout: float) -> tuple[str, ...]:
    """``agnhost connect`` for SCTP; its ``--timeout`` defaults to none, so it is
    always given."""
    return (AGNHOST, "connect", f"{address}:{port}", f"--timeout={max(1, round(timeout * 1000))}ms", "--protocol=sctp")


def target_argv(
    protocol: Protocol, address: str, port: int, timeout: float, resolve: bool = False
) -> tuple[tuple[str, ...], bytes | None]:
    """The client command line of one probe and what it reads on standard input."""
    if protocol is Protocol.SCTP:
        return agnhost_argv(address, port, timeout), None
    return client_argv(protocol, address, port, timeout, resolve=resolve)


def script_command(targets: Sequence[ProbeTarget], timeout: float, parallel: int = DEFAULT_PARALLEL) -> list[str]:
    """The exec command: ``sh -c <script> <name> <parallel>`` and, per probe,
    ``<id> <input> <n> <argv...>``."""
    args = ["sh", "-c", script_text(), SCRIPT_NAME, str(parallel)]
    for target in targets:
        argv, stdin = target_argv(target.protocol, target.address, target.port, timeout, target.resolve)
        line = stdin.decode().strip() if stdin is not None else "-"
        args += [str(target.id), line, str(len(argv)), *argv]
    return args


def round_timeout(targets: Sequence[ProbeTarget], timeout: float, parallel: int = DEFAULT_PARALLEL) -> float:
    """How long the exec of a round may take: each batch of ``parallel`` probes waits
    at most as long as its slowest client (nc rounds up to whole seconds), plus
    start-up of the batch and of the exec."""
    batches = max(1, math.ceil(len(targets) / parallel))
    slowest = max((client_wait(t.protocol, timeout) for t in targets), default=timeout)
    return batches * (slowest + 2) + 10


@dataclass(frozen=True)
class ProbeResult:
    """What the script reports for one probe: the client's exit code, how long it
    ran and what it wrote."""

    id: int
    exit_code: int
    elapsed_ms: int
    stdout: bytes
    stderr: bytes

    @property
    def elapsed(self) -> float:
        return self.elapsed_ms / 1000


def _unhex(word: str) -> bytes:
    return b"" if word == "-" else bytes.fromhex(word)


def parse_output(text: str) -> tuple[dict[int, ProbeResult], list[str]]:
    """Result lines by probe id, and the problems found (malformed result lines,
    duplicate ids, script errors). Lines without the marker are ignored."""
    results: dict[int, ProbeResult] = {}
    problems: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(MARKER + "-ERROR"):
            problems.append(raw[len(MARKER) + len("-ERROR") :].strip())
            continue
        if not raw.startswith(MARKER + " "):
            continue
        parts = raw.split(" ")
        try:
            if len(parts) != 6:
                raise ValueError(f"{len(parts)} fields")
            _, ident, code, elapsed, out, err = parts
            result = ProbeResult(int(ident), int(code), int(elapsed), _unhex(out), _unhex(err))
        except ValueError as error:
            problems.append(f"malformed result line {raw[:200]!r} ({error})")
            continue
        if result.id in results:
            problems.append(f"probe {result.id} reported twice")
            continue
        results[result.id] = result
    return results, problems


def classify_agnhost(result: ProbeResult) -> tuple[Outcome, str]:
    """``agnhost connect``: exit 0 connected; otherwise its error output starts with
    the class of the failure. It does not say who answered."""
    if result.exit_code == 0:
        return Outcome.ALLOWED, ""
    said = result.stderr.decode(errors="replace").strip()
    klass = said.split(":", 1)[0].split(" ", 1)[0]
    if klass == "TIMEOUT":
        return Outcome.BLOCKED, "timeout"
    if klass == "REFUSED":
        return Outcome.REFUSED, "connection refused"
    detail = " ".join(said.split())[:200] or "no message"
    return Outcome.ERROR, f"agnhost connect exit {result.exit_code}: {detail}"


#: Why a refusal is a block where Felix rejects (harness.kube.calico.DenyAction).
REJECTED = "Calico's deny action is REJECT on this cluster (--deny-action reject), so a refusal is the policy's"


def observation(
    result: ProbeResult | None,
    protocol: Protocol,
    identity: str,
    timeout: float,
    command: str,
    missing: str = "",
    rejects: bool = False,
) -> Observation:
    """What one probe's result means, checked against the endpoint that should answer.
    ``rejects``: Felix denies with REJECT here, so a refused probe was refused by a
    policy and is blocked (every declared port of a probe pod is served, so nothing
    else refuses it)."""
    if result is None:
        return Observation(Outcome.ERROR, missing or "the probe script printed no result for this probe", command)
    if protocol is Protocol.SCTP:
        outcome, detail = classify_agnhost(result)
    else:
        # The clients end on their own timeouts: none is killed in the pod.
        outcome, detail = classify(
            protocol, identity, timeout, result.exit_code, result.stdout, result.stderr, result.elapsed, math.inf
        )
    if rejects and outcome is Outcome.REFUSED:
        return Observation(Outcome.BLOCKED, f"rejected, {detail}: {REJECTED}", command, result.elapsed)
    return Observation(outcome, detail, command, result.elapsed)


def kubectl_words(kubeconfig: str | None, context: str | None) -> list[str]:
    words = ["kubectl"]
    if kubeconfig:
        words += ["--kubeconfig", kubeconfig]
    if context:
        words += ["--context", context]
    return words


def reproduce_command(
    kubeconfig: str | None,
    context: str | None,
    namespace: str,
    pod: str,
    container: str,
    protocol: Protocol,
    address: str,
    port: int,
    timeout: float,
    resolve: bool = False,
) -> str:
    """The ``kubectl exec`` line that repeats one probe by hand, with the same client
    as the round (``-i`` when the client reads its input)."""
    base = kubectl_words(kubeconfig, context)
    target = ["-n", namespace, pod, "-c", container, "--"]
    argv, stdin = target_argv(protocol, address, port, timeout, resolve)
    return shell_line([*base, "exec", *target], argv, stdin, stdin_runner=[*base, "exec", "-i", *target])


def kubectl_line(kubeconfig: str | None, context: str | None, args: Iterable[str]) -> str:
    """A ``kubectl`` line a user can paste, quoted for a POSIX shell."""
    return shlex.join([*kubectl_words(kubeconfig, context), *args])
