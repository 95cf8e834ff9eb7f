"""The in-pod probe round: the script, its arguments, and its output parsed into
observations.

One ``kubectl exec`` per source pod runs ``probe.sh`` with every probe of that pod;
the script runs them concurrently and prints one ``NPH`` line per probe, which
:func:`parse_output` reads back. Anything else in the output is ignored, and a probe
without its line is an error, never a silent "blocked".
"""

from __future__ import annotations

import enum
import math
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

from harness.core.matrix import Observation, Outcome
from harness.core.topology import Protocol

MARKER = "NPH"
#: ``$0`` of the script: what ``ps`` shows in the pod.
SCRIPT_NAME = "netpol-harness-probe"
#: Probes one pod runs at once: each is a short-lived socat process.
DEFAULT_PARALLEL = 32

_UNSAFE = re.compile(r"[^A-Za-z0-9./:_=-]")


def script_text() -> str:
    return resources.files("harness.kube").joinpath("probe.sh").read_text(encoding="utf-8")


def seconds_arg(timeout: float) -> str:
    """``1.0`` → ``1``, ``0.5`` → ``0.5`` (socat and curl accept fractions)."""
    return f"{timeout:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class ProbeTarget:
    """One probe as the script sees it: an id local to this round."""

    id: int
    protocol: Protocol
    address: str
    port: int


def script_command(targets: Sequence[ProbeTarget], timeout: float, parallel: int = DEFAULT_PARALLEL) -> list[str]:
    """The exec command: ``sh -c <script> <name> <timeout> <ms> <parallel> <probes...>``."""
    args = ["sh", "-c", script_text(), SCRIPT_NAME, seconds_arg(timeout), str(max(1, round(timeout * 1000))), str(parallel)]
    for target in targets:
        args += [str(target.id), target.protocol.value, target.address, str(target.port)]
    return args


def round_timeout(count: int, timeout: float, parallel: int = DEFAULT_PARALLEL) -> float:
    """How long the exec of ``count`` probes may take: each batch of ``parallel``
    probes needs at most two probe timeouts (connect, then reply), plus start-up."""
    batches = max(1, math.ceil(count / parallel))
    return batches * (2 * timeout + 2) + 10


class ProbeClass(enum.Enum):
    OK = "OK"
    TIMEOUT = "TIMEOUT"
    REFUSED = "REFUSED"
    DNS = "DNS"
    NOREPLY = "NOREPLY"
    UNKNOWN = "UNKNOWN"
    OTHER = "OTHER"


@dataclass(frozen=True)
class ProbeLine:
    id: int
    klass: ProbeClass
    exit_code: int
    elapsed_ms: int
    responder: str
    message: str

    @property
    def elapsed(self) -> float:
        return self.elapsed_ms / 1000


def sanitize(text: str) -> str:
    """What the script makes of a reply (``word``), to compare identities."""
    return _UNSAFE.sub("_", text)[:160]


def parse_output(text: str) -> tuple[dict[int, ProbeLine], list[str]]:
    """Result lines by probe id, and the problems found (malformed result lines,
    duplicate ids, script errors). Lines without the marker are ignored."""
    lines: dict[int, ProbeLine] = {}
    problems: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(MARKER + "-ERROR"):
            problems.append(raw[len(MARKER) + len("-ERROR") :].strip())
            continue
        if not raw.startswith(MARKER + " "):
            continue
        parts = raw.split(" ")
        try:
            if len(parts) != 7:
                raise ValueError(f"{len(parts)} fields")
            _, ident, klass, code, elapsed, responder, message = parts
            line = ProbeLine(int(ident), ProbeClass(klass), int(code), int(elapsed), responder, message)
        except ValueError as err:
            problems.append(f"malformed result line {raw!r} ({err})")
            continue
        if line.id in lines:
            problems.append(f"probe {line.id} reported twice")
            continue
        lines[line.id] = line
    return lines, problems


def _message(line: ProbeLine) -> str:
    return "" if line.message == "-" else line.message.replace("_", " ").strip()


def observation(line: ProbeLine | None, expected_identity: str, command: str, missing: str = "") -> Observation:
    """What one probe line means, checked against the endpoint that should answer."""
    if line is None:
        return Observation(Outcome.ERROR, missing or "the probe script printed no result for this probe", command)
    elapsed = line.elapsed
    if line.klass is ProbeClass.OK:
        if line.responder in ("-", sanitize(expected_identity)):
            return Observation(Outcome.ALLOWED, "", command, elapsed)
        return Observation(Outcome.WRONG_RESPONDER, f"answered by {line.responder}", command, elapsed)
    if line.klass is ProbeClass.NOREPLY:
        return Observation(Outcome.WRONG_RESPONDER, "connected, but nothing answered", command, elapsed)
    if line.klass is ProbeClass.TIMEOUT:
        return Observation(Outcome.BLOCKED, "timeout", command, elapsed)
    if line.klass is ProbeClass.REFUSED:
        return Observation(Outcome.REFUSED, "connection refused", command, elapsed)
    detail = f"{line.klass.value}: {_message(line)}" if _message(line) else line.klass.value
    return Observation(Outcome.ERROR, f"{detail} (exit code {line.exit_code})", command, elapsed)


def single_probe_command(protocol: Protocol, address: str, port: int, timeout: float, socat: bool = True) -> list[str]:
    """The in-pod command that repeats one probe by hand, as the script runs it.
    ``address`` is quoted inside the ``sh -c`` script: a placeholder such as
    ``<address of shop/api>`` stays one word instead of becoming a redirection."""
    t = seconds_arg(timeout)
    if socat and protocol is Protocol.TCP:
        request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
        target = shlex.quote(f"TCP4:{address}:{port},connect-timeout={t}")
        return ["sh", "-c", f"{request} | socat -T{t} -t{t} - {target}"]
    if socat and protocol is Protocol.UDP:
        target = shlex.quote(f"UDP4:{address}:{port}")
        return ["sh", "-c", f"printf 'hostname\\n' | socat -T{t} -t{t} - {target}"]
    ms = max(1, round(timeout * 1000))
    return ["/agnhost", "connect", f"{address}:{port}", f"--timeout={ms}ms", f"--protocol={protocol.value.lower()}"]


def kubectl_exec_command(
    kubeconfig: str | None,
    context: str | None,
    namespace: str,
    pod: str,
    container: str,
    command: Iterable[str],
) -> str:
    """A ``kubectl exec`` line a user can paste."""
    return kubectl_line(kubeconfig, context, ["exec", "-n", namespace, pod, "-c", container, "--", *command])


def kubectl_line(kubeconfig: str | None, context: str | None, args: Iterable[str]) -> str:
    """A ``kubectl`` line a user can paste, quoted for a POSIX shell."""
    words = ["kubectl"]
    if kubeconfig:
        words += ["--kubeconfig", kubeconfig]
    if context:
        words += ["--context", context]
    return shlex.join([*words, *args])
