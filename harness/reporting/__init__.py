"""Reports people read: per-scenario JSON and Markdown, an HTML page, the CI step
summary and the end-of-run table. The pytest side is :mod:`harness.reporting.plugin`;
the rest builds reports from :class:`~harness.reporting.records.ScenarioRecord`
without pytest."""
