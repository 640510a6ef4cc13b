"""Experiment tooling: compare methods at equal budget and show what Band does.

- `bandit`: the tabular softmax GRPO testbed: its scenarios, the simulation and `bandpo compare --task bandit`
  with its report.
- `lm_compare`: methods x seeds through `bandpo.training.train` (`bandpo compare`): the resumable plan; with
  `lm_workers` (training the runs not finished yet under one progress bar, each in its own process),
  `lm_results` (each run's records: completion marker, settings against the plan's, per_seed.json, validated,
  and `--reuse` of another per_seed.json's finished runs) and `lm_report` (report.md, and the plot of a
  `--sweep PARAM=...`).
- `stats`: every report's statistics: paired t and exact Wilcoxon signed-rank tests, exact Student-t
  intervals, Holm-Bonferroni per test.
- `confirmatory`: the preregistered confirmatory test of docs/experiments.md (`bandpo compare --confirmatory`).
- `bound_plots`: the paper's Fig. 1 and Fig. 2 for any divergences and radii (`bandpo plot bounds`).
- `report`: mean ± standard error over seeds, Markdown tables, line plots with a spread band.
- `arms`: the arms of the command line: `name:key=value,...` method specs and `--sweep` expansion.

Importing this package is cheap; matplotlib and the training stack load when a report or a run needs them.
"""
