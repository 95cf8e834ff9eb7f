"""The change impact of a pull request, as a reviewer reads it: in the terminal, as
Markdown for a pull-request comment (and the CI step summary), as JSON."""

from __future__ import annotations

from harness.engine.change import ImpactReport, ScenarioChange, Status, StepChange
from harness.engine.impact import Change
from harness.reporting.markdown import escape

#: Marks the pull-request comment the workflow updates instead of adding another.
COMMENT_MARKER = "<!-- netpol-harness impact -->"
#: Groups shown per step in Markdown; the JSON has them all.
GROUP_LIMIT = 30


def _headline(report: ImpactReport) -> str:
    changed = sum(1 for c in report.changes if c.status in (Status.CHANGED, Status.NEW, Status.REMOVED))
    text = f"{changed} of {len(report.changes)} scenario(s) changed since {report.base}: "
    text += f"{report.opened} cell(s) opened, {report.closed} closed"
    if report.undeclared:
        text += f", {report.undeclared} opening(s) no expectation declares"
    if report.errors:
        text += f", {len(report.errors)} scenario(s) could not be read"
    return text


def _confirmation(step: StepChange) -> str:
    c = step.confirmation
    if c is None:
        return ""
    text = f"confirmed with real traffic on {c.backend}: {c.opened} of {step.impact.opened} opened, "
    text += f"{c.closed} of {step.impact.closed} closed"
    if c.contradicted:
        text += f"; {len(c.contradicted)} observed otherwise ({', '.join(map(str, c.contradicted[:5]))})"
    return text


def _scenario_line(change: ScenarioChange) -> str:
    if change.status is Status.NEW:
        return f"{change.path} ({change.name}): new in the working tree"
    if change.status is Status.REMOVED:
        return f"{change.path} ({change.name}): removed since {change.base}"
    if change.status is Status.ERROR:
        return f"{change.path}: {change.error}"
    renamed = f", renamed from {change.renamed_from}" if change.renamed_from else ""
    return f"{change.path} ({change.name}{renamed}): {change.opened} opened, {change.closed} closed"


def render_text(report: ImpactReport) -> str:
    lines = [f"netpol-harness impact: {_headline(report)}"]
    for change in report.changes:
        if change.status is Status.UNCHANGED:
            continue
        lines.append("")
        lines.append(_scenario_line(change))
        for step in change.steps:
            several = len(change.steps) > 1
            if step.impact.new and change.status is not Status.NEW:
                lines.append(f"  step {step.name}: new step")
                continue
            for group in step.impact.groups:
                word = "opened" if group.change is Change.OPENED else "closed"
                where = f"[{step.name}] " if several else ""
                lines.append(f"  {word:<6} {where}{group.summary()}")
            confirmation = _confirmation(step)
            if confirmation:
                lines.append(f"         {confirmation}")
        for diff in change.diffs:
            lines.append(f"  {diff.head_path or diff.base_path}: +{diff.added} -{diff.removed}")
            lines += [f"    {line}" for line in diff.text().splitlines()]
        gate = change.gate_message()
        if gate:
            lines.append(gate)
    return "\n".join(lines) + "\n"


def render_markdown(report: ImpactReport) -> str:
    """A pull-request comment: the totals, a table of the scenarios that changed, and
    per scenario the groups of opened (red) and closed (blue) cells with their
    causes and the changed lines of the policy files."""
    out = [COMMENT_MARKER, f"## netpol-harness: change impact since `{escape(report.base)}`", "", escape(_headline(report)) + "."]
    changed = [c for c in report.changes if c.status is not Status.UNCHANGED]
    if not changed:
        out += ["", "No scenario's reachability changes."]
        return "\n".join(out) + "\n"
    out += ["", "| scenario | file | status | opened | closed | undeclared openings |", "|---|---|---|---:|---:|---:|"]
    for c in changed:
        out.append(
            f"| {escape(c.name)} | {escape(c.path)} | {c.status.value} | {c.opened} | {c.closed} | "
            f"{'**' + str(c.undeclared) + '**' if c.undeclared else 0} |"
        )
    for c in changed:
        out += ["", f"### {escape(c.name)}", "", escape(_scenario_line(c))]
        for step in c.steps:
            if len(c.steps) > 1:
                out += ["", f"**Step {escape(step.name)}**: {escape(step.impact.summary())}"]
            out.append("")
            for i, group in enumerate(step.impact.groups):
                if i >= GROUP_LIMIT:
                    out.append(f"- … and {len(step.impact.groups) - GROUP_LIMIT} more groups (in the JSON)")
                    break
                mark = "🔴 opened" if group.change is Change.OPENED else "🔵 closed"
                out.append(f"- {mark}: {escape(group.summary())}")
            confirmation = _confirmation(step)
            if confirmation:
                out.append(f"- {escape(confirmation)}")
        for diff in c.diffs:
            name = diff.head_path or diff.base_path or "?"
            out += [
                "",
                f"<details><summary>{escape(name)}: +{diff.added} −{diff.removed}</summary>",
                "",
                "```diff",
                diff.text(),
                "```",
                "",
                "</details>",
            ]
        gate = c.gate_message()
        if gate:
            out += ["", "> [!WARNING]", "> " + escape(gate.splitlines()[0])]
    return "\n".join(out) + "\n"
