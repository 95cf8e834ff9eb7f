"""One round of probes on the emulated network, ended as soon as the kernel tells.

The probes are real curl and nc processes in the source pods' network namespaces:

* TCP: one curl per source namespace (at most :data:`BATCH_PARALLEL` transfers
  each), every destination a transfer of its own
  (:func:`harness.core.probe_clients.curl_batch_argv`), so a round starts a few
  processes instead of hundreds;
* UDP: one ``nc -u`` per probe, as its reproduce command shows.

While they run, the harness reads the NFLOG messages of the policy chains
(:mod:`harness.backends.emulated.nflog`): the moment the packet of a probe is
dropped, that probe is blocked, with the chain that dropped it; its nc process, or
its curl once every transfer of that curl is decided, is ended. Admitting rules
log the first packet of each flow, so an allowed probe also knows the rule that
let it through. The timeout stays as the fallback for probes whose packets no
chain reports. A probe is keyed by (source address, destination address,
protocol, destination port): within a pass each key has one attempt at a time,
and the log sockets are drained before each pass, so no message of an earlier
attempt is read as one of this attempt's.

A probe that ended in an error (killed at its limit, could not start) or in a
timeout no drop explains is tried again, up to :data:`ATTEMPTS` times in all,
before its result becomes a verdict: only a loaded machine produces those, and a
second try tells them from real results, which come back the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.emulated.nflog import LoggedPacket, LogSubscription
from harness.backends.emulated.probes import KILL_GRACE, ProbeCommand, probe_command
from harness.backends.emulated.ruleset import ChainMeaning, LogIndex, RuleMeaning
from harness.backends.emulated.runner import Exited, Finished, Job, Output, ProcessPool, Started, round_deadline
from harness.backends.emulated.services import source_block
from harness.backends.emulated.why import ChainAction, ChainVerdict, PolicyTrace
from harness.core.matrix import Outcome
from harness.core.policy import PolicyType
from harness.core.probe_clients import (
    BATCH_PARALLEL,
    classify,
    connect_failures,
    curl_batch_argv,
    tcp_outcome,
    transfer_reports,
)
from harness.core.topology import Protocol

log = logging.getLogger(__name__)

#: Tries of one probe at most before its error or unexplained timeout is final.
ATTEMPTS = 3
#: Most bytes of a body read: an identity is a few.
_BODY_LIMIT = 4096
_IP_PROTOCOL = {Protocol.TCP: 6, Protocol.UDP: 17}
#: What a probe to an address no emulated host owns gets (from the node's ruleset).
UNREACHABLE = "network is unreachable"
#: A pod's traffic to its own address under ``self_traffic: allowed``.
SELF_NOTE = "a pod's traffic to its own address never leaves it (self_traffic: allowed)"

#: (source address, destination address, IP protocol, destination port), and the
#: source port for a probe sent from a port of its choosing (through a Service).
Key = tuple[str, str, int, int] | tuple[str, str, int, int, int]


@dataclass(frozen=True)
class ProbeRequest:
    """One cell to probe: from a pod to an address and port."""

    source: str  # pod id
    source_netns: str
    source_address: str
    destination: str  # endpoint id
    destination_address: str
    destination_is_pod: bool
    protocol: Protocol
    port: int
    timeout: float
    #: Through a Service: the port the probe is sent from (which picks the backend,
    #: harness.backends.emulated.services), and the address and port the
    #: policies see after the DNAT (the backend's), by which its packets are logged.
    source_port: int | None = None
    policy_address: str = ""
    policy_port: int = 0
    #: By name: ``destination_address`` is a name the pod's resolver resolves, and
    #: this is the key of its DNS queries (to the cluster DNS pod on 53/UDP).
    dns_key: Key | None = None

    @property
    def resolve(self) -> bool:
        return self.dns_key is not None

    @property
    def key(self) -> Key:
        """What its packets look like to the policies, and so in the kernel's log:
        with the source port when it has its own (a probe through a Service), so
        that its packets are told from another probe's to the same backend."""
        address = self.policy_address or self.destination_address
        key = (self.source_address, address, _IP_PROTOCOL[self.protocol], self.policy_port or self.port)
        return key if self.source_port is None else (*key, self.source_port)

    @property
    def self_traffic(self) -> bool:
        return self.source_address == (self.policy_address or self.destination_address)

    @property
    def batchable(self) -> bool:
        """One transfer of a source's curl: not from a chosen port (concurrent
        transfers cannot share one) nor by name (that needs ``ip netns exec``)."""
        return self.protocol is Protocol.TCP and self.source_port is None and not self.resolve

    def command(self) -> ProbeCommand:
        return probe_command(
            self.source_netns,
            self.protocol,
            self.destination_address,
            self.port,
            self.destination,
            self.timeout,
            self.source_port,
            self.resolve,
        )


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    detail: str
    command: str
    elapsed: float
    #: What the policy chains did with the probe's packet (None: nothing known,
    #: e.g. a probe that never ran).
    trace: PolicyTrace | None = None
    attempts: int = 1

    def describe(self) -> str:
        return f"{self.outcome.value} ({self.detail})" if self.detail else self.outcome.value


@dataclass(frozen=True)
class RoundSetup:
    """What a round needs of the deployment."""

    workers: int
    scratch: Path  # a directory for the bodies curl writes
    logs: Sequence[LogSubscription]
    index: LogIndex
    #: A pod's traffic to itself meets its policies (``self_traffic: policy``).
    self_policy: bool = False


@dataclass
class _Attempt:
    request: int
    started: float
    admits: dict[PolicyType, str] = field(default_factory=dict)
    #: Admin-tier Pass rules the packet met, by direction.
    passes: dict[PolicyType, str] = field(default_factory=dict)
    drop: ChainMeaning | None = None
    #: The chain that dropped the DNS query of a probe by name.
    dns_drop: ChainMeaning | None = None
    result: tuple[Outcome, str, float] | None = None


@dataclass
class _Batch:
    """One curl process: its transfers by body file."""

    netns: str
    transfers: dict[str, int]  # body file → request index
    pending: set[int]
    started: float
    limit: float
    buffer: bytes = b""
    failures: dict[tuple[str, int | None], str] = field(default_factory=dict)


def needs_another_try(result: ProbeResult, drop_seen: bool) -> bool:
    """An error, or a timeout or failed name resolution that no policy drop
    explains: what a loaded machine produces, so it is tried again before it
    becomes a verdict."""
    if result.outcome is Outcome.ERROR:
        return True
    if result.outcome in (Outcome.BLOCKED, Outcome.NAME_NOT_RESOLVED) and not drop_seen:
        return True
    return result.outcome is Outcome.WRONG_RESPONDER and result.detail == "connected, nothing answered"


class ProbeRound:
    """Probe ``requests`` once each (errors and unexplained timeouts again)."""

    def __init__(self, requests: Sequence[ProbeRequest], setup: RoundSetup) -> None:
        self.requests = requests
        self.setup = setup
        self.commands = [r.command() for r in requests]
        self.results: dict[int, ProbeResult] = {}
        #: Requests whose last attempt saw its drop, and those never to be tried again.
        self._dropped: set[int] = set()
        self._final: set[int] = set()
        self._attempts: dict[int, _Attempt] = {}
        self._active: dict[Key, list[_Attempt]] = {}
        #: Probes by name waiting for their name, by the key of their DNS queries.
        self._resolving: dict[Key, list[_Attempt]] = {}
        self._batches: dict[int, _Batch] = {}
        self._single: dict[int, int] = {}  # nc job → request
        self._job_of: dict[int, int] = {}  # request → its job
        self._ended: set[int] = set()
        self._started_at: dict[int, float] = {}

    def run(self) -> list[ProbeResult]:
        todo = list(range(len(self.requests)))
        for attempt in range(1, ATTEMPTS + 1):
            if not todo:
                break
            self._pass(todo, attempt)
            todo = [i for i in todo if i not in self._final and needs_another_try(self.results[i], i in self._dropped)]
        return [self.results[i] for i in range(len(self.requests))]

    # -- one pass ------------------------------------------------------------------

    def _pass(self, indices: Sequence[int], attempt: int) -> None:
        self._attempts, self._active, self._batches, self._single = {}, {}, {}, {}
        self._resolving = {}
        self._job_of, self._ended, self._started_at = {}, set(), {}
        self._read_logs()  # what earlier attempts left: nothing is active, so it is dropped
        scratch = self.setup.scratch / f"pass-{attempt}"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            with ProcessPool(self.setup.workers, [log.fileno() for log in self.setup.logs]) as self._pool:
                jobs = self._submit(indices, scratch)
                limit = round_deadline(jobs, self.setup.workers)
                ends = time.monotonic() + limit
                while self._pool.busy:
                    now = time.monotonic()
                    if now >= ends:
                        self._abandon(indices, limit)
                        break
                    events, _ = self._pool.poll(ends - now)
                    # The log first: a drop or an admission of a probe's packet was
                    # queued before anything its process could write about it.
                    self._read_logs()
                    for event in events:
                        self._handle(event)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for index in indices:
            run = self._attempts.get(index)
            if run is None or run.result is None:
                self._finish(index, Outcome.ERROR, "the probe was not run", 0.0, attempt)
            else:
                self._finish(index, *run.result, attempt)

    def _submit(self, indices: Sequence[int], scratch: Path) -> list[Job]:
        jobs: list[Job] = []
        now = time.monotonic()
        tcp: dict[str, list[int]] = {}
        for index in indices:
            request = self.requests[index]
            run = _Attempt(index, now)
            self._attempts[index] = run
            self._active.setdefault(request.key, []).append(run)
            if request.dns_key is not None:
                self._resolving.setdefault(request.dns_key, []).append(run)
            if request.batchable:
                tcp.setdefault(request.source_netns, []).append(index)
            else:
                command = self.commands[index]
                job = Job(command.netns, command.launch_argv, command.stdin, command.limit)
                jobs.append(job)
                job_id = self._pool.submit(job)
                self._single[job_id] = index
                self._job_of[index] = job_id
        for netns, members in tcp.items():
            for start in range(0, len(members), BATCH_PARALLEL):
                chunk = members[start : start + BATCH_PARALLEL]
                transfers = {str(scratch / f"{netns}-{start + n}"): index for n, index in enumerate(chunk)}
                timeout = max(self.requests[i].timeout for i in chunk)
                argv = curl_batch_argv(
                    [(self.requests[i].destination_address, self.requests[i].port, body) for body, i in transfers.items()],
                    timeout,
                )
                job = Job(netns, argv, None, timeout + KILL_GRACE, stream_stderr=True)
                jobs.append(job)
                job_id = self._pool.submit(job)
                self._batches[job_id] = _Batch(netns, transfers, set(chunk), now, timeout + KILL_GRACE)
                self._job_of.update(dict.fromkeys(chunk, job_id))
        return jobs

    def _abandon(self, indices: Sequence[int], limit: float) -> None:
        why = f"the probe round did not finish within {limit:.0f}s"
        for index in indices:
            run = self._attempts[index]
            if run.result is None:
                run.result = (Outcome.ERROR, why, time.monotonic() - run.started)
                self._final.add(index)  # a fault of the harness: no other try

    # -- what the kernel says ----------------------------------------------------------

    def _read_logs(self) -> None:
        for subscription in self.setup.logs:
            lost = subscription.lost
            for packet in subscription.read():
                self._logged(packet)
            if subscription.lost and not lost:
                # Those probes wait their timeout and are tried again: slower, not wrong.
                log.warning("NFLOG messages were lost in %s (its socket buffer overflowed)", subscription.netns)

    def _logged(self, packet: LoggedPacket) -> None:
        key = (packet.source, packet.destination, packet.protocol, packet.destination_port)
        drop = self.setup.index.drops.get(packet.prefix)
        if drop is not None and key in self._resolving:
            # A DNS query dropped: every name probe of that source waiting for a
            # name gets none (the policies treat all its queries alike).
            for run in self._resolving.pop(key):
                if run.result is None:
                    run.dns_drop = drop
                    self._resolve(run, Outcome.NAME_NOT_RESOLVED, "", time.monotonic() - run.started)
                    self._end_job_of(run.request)
        block = source_block(packet.source_port)
        attempts = [*self._active.get(key, ()), *(self._active.get((*key, block), ()) if block is not None else ())]
        if not attempts:
            return
        admit: RuleMeaning | None = None if drop is not None else self.setup.index.admits.get(packet.prefix)
        passed: RuleMeaning | None = self.setup.index.passes.get(packet.prefix)
        unreachable = packet.prefix == self.setup.index.unreachable
        for run in attempts:
            if run.result is not None:
                continue
            if unreachable:
                self._resolve(run, Outcome.ERROR, UNREACHABLE, time.monotonic() - run.started)
                self._end_job_of(run.request)
            elif admit is not None:
                run.admits.setdefault(admit.direction, admit.rule)
            elif passed is not None:
                run.passes.setdefault(passed.direction, passed.rule)
            elif drop is not None:
                run.drop = drop
                self._resolve(run, Outcome.BLOCKED, "", time.monotonic() - run.started)
                self._end_job_of(run.request)

    def _end_job_of(self, index: int) -> None:
        job = self._job_of.get(index)
        if job is None:
            return
        batch = self._batches.get(job)
        if batch is not None:
            batch.pending.discard(index)
            if batch.pending:
                return  # its curl still has transfers to report
        self._end(job)

    def _end(self, job: int) -> None:
        if job not in self._ended:
            self._ended.add(job)
            self._pool.end(job)

    # -- what the processes say ----------------------------------------------------------

    def _handle(self, event: Output | Exited | Started) -> None:
        if isinstance(event, Started):
            self._started_at[event.job] = event.at
            return
        batch = self._batches.get(event.job)
        if isinstance(event, Output):
            if batch is not None:
                self._batch_output(event.job, batch, event.data)
            return
        self._ended.add(event.job)
        if batch is not None:
            self._batch_exited(event.job, batch, event.result)
            return
        index = self._single.get(event.job)
        if index is not None:
            self._single_exited(index, event.result)

    def _batch_output(self, job: int, batch: _Batch, data: bytes) -> None:
        text = batch.buffer + data
        cut = text.rfind(b"\n") + 1
        batch.buffer = text[cut:]
        if not cut:
            return
        chunk = text[:cut].decode(errors="replace")
        # A connect failure is reported before its transfer's line, in this chunk or an
        # earlier one; each (address, port) is one transfer of the batch.
        batch.failures.update(connect_failures(chunk))
        for report in transfer_reports(chunk):
            index = batch.transfers.get(report.body_file)
            if index is None:
                continue
            body = _read_body(report.body_file)
            run = self._attempts[index]
            if run.result is not None:
                continue  # decided by its drop already
            request = self.requests[index]
            reason = batch.failures.get((request.destination_address, request.port)) or batch.failures.get(
                (request.destination_address, None), ""
            )
            outcome, detail = tcp_outcome(request.destination, report.exitcode, body, report.connected, reason, report.message)
            started = self._started_at.get(job, batch.started)
            self._resolve(run, outcome, detail, time.monotonic() - started)
            batch.pending.discard(index)
        if not batch.pending:
            self._end(job)

    def _batch_exited(self, job: int, batch: _Batch, result: Finished) -> None:
        self._ended.add(job)
        if result.error and not result.ended:
            why = result.error
        elif result.returncode is None and not result.ended:
            why = f"curl did not finish within {batch.limit:g}s and was killed"
        else:
            why = f"curl ended (exit {result.returncode}) without reporting this transfer"
        for body, index in batch.transfers.items():
            Path(body).unlink(missing_ok=True)
            run = self._attempts[index]
            if run.result is None:
                self._resolve(run, Outcome.ERROR, why, result.elapsed)

    def _single_exited(self, index: int, result: Finished) -> None:
        run = self._attempts[index]
        if run.result is not None:
            return  # decided by its drop
        command = self.commands[index]
        if result.error:
            self._resolve(run, Outcome.ERROR, result.error, result.elapsed)
            return
        outcome, detail = classify(
            command.protocol,
            command.identity,
            command.timeout,
            result.returncode,
            result.stdout,
            result.stderr,
            result.elapsed,
            command.limit,
        )
        self._resolve(run, outcome, detail, result.elapsed)

    # -- verdicts -----------------------------------------------------------------------------

    def _resolve(self, run: _Attempt, outcome: Outcome, detail: str, elapsed: float) -> None:
        run.result = (outcome, detail, elapsed)
        request = self.requests[run.request]
        attempts = self._active.get(request.key)
        if attempts and run in attempts:
            attempts.remove(run)
            if not attempts:
                del self._active[request.key]

    def _finish(self, index: int, outcome: Outcome, detail: str, elapsed: float, attempt: int) -> None:
        run = self._attempts.get(index)
        request = self.requests[index]
        trace = self._trace(request, run) if run is not None else None
        drop_seen = run is not None and run.drop is not None
        dns_drop = run.dns_drop if run is not None and outcome is Outcome.NAME_NOT_RESOLVED else None
        if dns_drop is not None:
            # The DNS query met a chain that dropped it: the name never resolved.
            verdict = ChainVerdict(dns_drop.direction, dns_drop.pod, ChainAction.DROPPED, dns_drop.policies)
            detail = f"the DNS query was dropped: {verdict.text()}"
            trace = PolicyTrace((verdict,))
            drop_seen = True
        elif drop_seen and trace is not None:
            detail = trace.text()
        elif outcome is Outcome.ALLOWED and trace is not None:
            detail = trace.text()
        elif outcome is Outcome.BLOCKED and detail == "timeout":
            detail = "timeout; no policy dropped it"
        if drop_seen:
            self._dropped.add(index)
        else:
            self._dropped.discard(index)
        self.results[index] = ProbeResult(outcome, detail, self.commands[index].shell, round(elapsed, 3), trace, attempt)

    def _trace(self, request: ProbeRequest, run: _Attempt) -> PolicyTrace:
        if request.self_traffic and not self.setup.self_policy:
            return PolicyTrace((), SELF_NOTE)
        index = self.setup.index
        verdicts: list[ChainVerdict] = []
        sides = [(PolicyType.EGRESS, request.source)]
        if request.destination_is_pod:
            sides.append((PolicyType.INGRESS, request.destination))
        for direction, pod in sides:
            policies = index.isolating(pod, direction)
            passed = run.passes.get(direction, "")
            drop = run.drop
            if drop is not None and drop.direction is direction and drop.pod in ("", pod):
                # A cluster policy's Deny names no pod: it is this direction's pod.
                verdicts.append(ChainVerdict(direction, pod, ChainAction.DROPPED, drop.policies, drop.rule, passed))
                break  # the packet met no chain after this one
            admitted = run.admits.get(direction, "")
            if policies or admitted:
                verdicts.append(ChainVerdict(direction, pod, ChainAction.ADMITTED, policies, admitted, passed))
            else:
                verdicts.append(ChainVerdict(direction, pod, ChainAction.NOT_ISOLATED, passed=passed))
        return PolicyTrace(tuple(verdicts))


def _read_body(path: str) -> str:
    try:
        with open(path, "rb") as body:
            data = body.read(_BODY_LIMIT)
    except FileNotFoundError:
        return ""
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return data.decode(errors="replace")


def run_round(requests: Sequence[ProbeRequest], setup: RoundSetup) -> list[ProbeResult]:
    """The result of each request, in order: the narrow entry point the backend calls."""
    if not requests:
        return []
    return ProbeRound(requests, setup).run()


__all__ = ["ATTEMPTS", "ProbeRequest", "ProbeResult", "RoundSetup", "needs_another_try", "run_round"]
