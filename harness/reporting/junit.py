"""A scenario's record in numbers, for JUnit XML ``<properties>`` (and any other
plugin reading ``user_properties``)."""

from __future__ import annotations

from harness.core.matrix import Outcome
from harness.engine.constraint_results import ConstraintStatus
from harness.reporting.records import ScenarioRecord


def junit_properties(record: ScenarioRecord) -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = [
        ("netpol.status", record.status.value),
        ("netpol.backend", record.backend_label),
        ("netpol.steps", len(record.steps)),
        ("netpol.probes", record.probes),
        ("netpol.mismatches", record.mismatches),
        ("netpol.allowed", sum(s.comparison.observed.count(Outcome.ALLOWED) for s in record.steps)),
        ("netpol.blocked", sum(s.comparison.observed.count(Outcome.BLOCKED) for s in record.steps)),
        ("netpol.unsupported", record.unsupported),
    ]
    if record.steps and record.steps[0].model is not None:
        props.append(("netpol.cni_findings", record.findings))
    backend = record.backend
    if backend is not None:
        for key in ("cni", "cni_version", "kubernetes_version"):
            if getattr(backend, key):
                props.append((f"netpol.{key}", getattr(backend, key)))
    audits = [s.audit for s in record.steps if s.audit is not None]
    if audits:
        props.append(("netpol.audit.would_block", sum(len(a.would_block) for a in audits)))
        props.append(("netpol.audit.would_allow", sum(len(a.would_allow) for a in audits)))
        props.append(("netpol.audit.undeclared", sum(len(a.undeclared) for a in audits)))
    if record.impact is not None:
        props.append(("netpol.impact", str(record.impact.get("status"))))
        props.append(("netpol.impact.opened", record.impact.get("opened", 0)))
        props.append(("netpol.impact.closed", record.impact.get("closed", 0)))
        props.append(("netpol.impact.undeclared", record.impact.get("undeclared_openings", 0)))
    if record.constraints is not None:
        results = record.constraints.results
        props.append(("netpol.constraints.violated", sum(r.status is ConstraintStatus.VIOLATED for r in results)))
        for result in results:
            value = result.status.value
            if result.status is ConstraintStatus.VIOLATED:
                value += f" ({result.violations} cell(s))"
            props.append((f"netpol.constraint.{result.name}", value))
    if record.baseline is not None:
        props.append(("netpol.baseline", record.baseline.summary))
        if not record.baseline.error:
            props.append(("netpol.baseline.changed", record.baseline.changed))
    return props
