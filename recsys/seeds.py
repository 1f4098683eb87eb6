"""One evaluation repeated over seeds (`recsys evaluate --seed 0,1,2`), so that no figure is the
luckiest draw.

A seed changes what a strategy starts from (SASRec's, ALS's and the served model's initialisation)
and, on the random and cold-item splits, which events are held out. Each seed's evaluation is run
and saved as usual; the summary gives each strategy's mean over seeds with its range. On a split
that holds out the same events whatever the seed (temporal, global-time), the later seeds reuse the
hyper-parameters the first one chose on validation events (no grid searched twice), and the best
and the runner-up are compared per user on their mean over seeds, with a paired bootstrap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys import evaluate
from recsys.errors import RecsysError
from recsys.metrics import paired_comparison

#: Splits that hold out the same events whatever the seed.
FIXED_SPLITS = ("temporal", "global-time")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2); a one-line error naming ``--seed`` otherwise."""
    try:
        seeds = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise RecsysError(f"--seed takes whole numbers separated by commas (0,1,2), got {text!r}") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise RecsysError(f"--seed takes distinct non-negative numbers, got {text!r}")
    return seeds


@dataclass
class SeedsReport:
    """Evaluations of one plan under several seeds.

    Attributes:
        reports: One saved evaluation per seed, in the seeds' order.
        seeds: The seeds.
        comparison: Paired bootstrap of the best minus the runner-up on their per-user means over
            seeds (fixed splits only; empty otherwise: the users differ between draws).
        against_best: The same for every other strategy: {name: {"mean_difference", "ci95",
            ...}} of that strategy minus the best (fixed splits only).
    """

    reports: list[evaluate.EvaluationReport]
    seeds: tuple[int, ...]
    comparison: dict = field(default_factory=dict)
    against_best: dict = field(default_factory=dict)

    def rows(self, k: int = 10) -> list[dict]:
        """Per strategy: the mean, lowest and highest recall@k and NDCG@k over the seeds, best first."""
        names = [s.name for s in self.reports[0].strategies]
        out = []
        for name in names:
            row: dict = {"strategy": name, "k": k, "seeds": []}
            for metric in ("recall", "ndcg"):
                values = [_result(r, name).mean(f"{metric}@{k}") for r in self.reports if _result(r, name)]
                row[metric] = float(np.mean(values))
                row[f"{metric}_min"], row[f"{metric}_max"] = float(min(values)), float(max(values))
                row[f"{metric}_by_seed"] = values
            if name in self.against_best:
                row["minus_best"] = self.against_best[name]
            row["ranks_new_items"] = all(
                _result(r, name).ranks_new_items for r in self.reports if _result(r, name)
            )
            out.append(row)
        return sorted(out, key=lambda r: r["recall"], reverse=True)

    def as_dict(self) -> dict:
        k = 10 if 10 in self.reports[0].ks else self.reports[0].ks[0]
        return {
            "split": self.reports[0].split,
            "seeds": list(self.seeds),
            "evaluation_ids": [r.evaluation_id for r in self.reports],
            "summary": self.rows(k),
            "paired_comparison": self.comparison,
            "seconds": round(sum(r.seconds for r in self.reports), 1),
            "strategy_seconds": {
                s.name: [round(_result(r, s.name).seconds, 1) for r in self.reports]
                for s in self.reports[0].strategies
            },
        }


def _result(report: evaluate.EvaluationReport, name: str) -> evaluate.StrategyResult | None:
    return next((s for s in report.strategies if s.name == name), None)


def _tuned(report: evaluate.EvaluationReport) -> dict[str, dict]:
    """What each strategy chose on the validation events (no grid, no version, no seed)."""
    drop = {"grid", "seed", "version"}
    return {s.name: {k: v for k, v in s.params.items() if k not in drop} for s in report.strategies}


def run(
    recommender,
    asked: evaluate.Plan,
    seeds: Sequence[int],
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    note: Callable[[str], None] = lambda _: None,
) -> SeedsReport:
    """Evaluate ``asked`` once per seed (each saved); see the module's docstring."""
    reports: list[evaluate.EvaluationReport] = []
    for seed in seeds:
        if log:
            log(f"seed {seed}")
        reuse = asked.split in FIXED_SPLITS and asked.users is None and reports
        params = _tuned(reports[0]) if reuse else None
        if reuse:
            strategies = tuple(s.name for s in reports[0].strategies)
            plan = dataclasses.replace(asked, seed=seed, strategies=strategies)
        else:
            plan = dataclasses.replace(asked, seed=seed)
        reports.append(evaluate.run(recommender, plan, progress=progress, log=log, note=note, params=params))
    result = SeedsReport(reports, tuple(seeds))
    if asked.split in FIXED_SPLITS and asked.users is None and len(reports) > 1:
        k = 10 if 10 in reports[0].ks else reports[0].ks[0]
        best, second = result.rows(k)[:2]
        key = f"recall@{k}"
        means = {
            s.name: np.mean([_result(r, s.name).per_user[key] for r in reports], axis=0)
            for s in reports[0].strategies
        }
        result.against_best = {
            name: paired_comparison(values, means[best["strategy"]], seed=seeds[0])
            for name, values in means.items()
            if name != best["strategy"]
        }
        result.comparison = {
            "metric": f"{key}, per user, mean over seeds",
            "better": best["strategy"],
            "worse": second["strategy"],
            **paired_comparison(means[best["strategy"]], means[second["strategy"]], seed=seeds[0]),
        }
    return result
