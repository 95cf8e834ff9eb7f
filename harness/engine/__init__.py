"""From step plans to verdicts: probing with re-probe rounds, the step pipeline, baselines."""
