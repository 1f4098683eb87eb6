"""Offline evaluation: which recommender should I ship, and how sure am I?

``plan`` turns what `recsys evaluate` was asked (a ``Plan``) into a split of the logs and the
strategies to compare, refusing any model trained apart on the split's test events
(``splits.leak``). ``evaluate`` fits every strategy on the split's training events and asks it for
the lists a user would be served, through the very ranking path serving uses, then scores them
with ``recsys.metrics``, with bootstrap intervals over users. ``save`` keeps the report in the
registry, where ``auto`` reads it.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys import registry, strategies
from recsys.errors import RecsysError
from recsys.events import load_history
from recsys.metrics import ListMetrics, bootstrap_ci, paired_comparison
from recsys.splits import (
    Split,
    TrainedOn,
    cold_item_split,
    global_time_split,
    leak,
    random_split,
    sample_users,
    temporal_split,
)

DEFAULT_KS = (10, 20, 50, 100)
SPLITS = ("temporal", "global-time", "random", "cold-items")


@dataclass
class StrategyResult:
    """Per-user metric values of one strategy (lists aligned with ``EvaluationReport.users``)."""

    name: str
    per_user: dict[str, list[float]] = field(default_factory=dict)
    coverage: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    params: dict = field(default_factory=dict)
    evaluation_id: int | None = None  # its row in the database, once stored
    cold_users: int = 0  # users it could not score (served the popular list instead)
    ranks_new_items: bool = True  # False: it has nothing to rank new items by (cold-item split)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.per_user[metric]))


@dataclass
class EvaluationReport:
    split: str
    ks: tuple[int, ...]
    users: list[str]
    catalogue_size: int
    strategies: list[StrategyResult]
    intervals: dict = field(default_factory=dict)
    comparison: dict = field(default_factory=dict)
    embeddings: dict | None = None
    seconds: float = 0.0
    params: dict = field(default_factory=dict)
    evaluation_id: int | None = None  # its row in the database, once stored

    def summary_rows(self) -> list[dict]:
        rows = []
        for s in self.strategies:
            for k in self.ks:
                row = {"strategy": s.name, "k": k}
                for metric in ("recall", "precision", "ndcg", "map", "hit_rate", "diversity", "novelty"):
                    row[metric] = s.mean(f"{metric}@{k}")
                row["coverage"] = s.coverage[k]
                row["mrr"] = s.mean("mrr")
                for metric in ("recall", "ndcg"):
                    lo, hi = self.intervals[s.name][f"{metric}@{k}"]
                    row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = lo, hi
                rows.append(row)
        return rows

    def as_dict(self) -> dict:
        return {
            "split": self.split,
            "split_params": self.params,
            "evaluation_id": self.evaluation_id,
            "strategy_params": {s.name: s.params for s in self.strategies},
            "notes": {
                s.name: "has nothing to rank new items by (no interactions): their order is arbitrary"
                for s in self.strategies
                if not s.ranks_new_items
            },
            "cold_users": {s.name: s.cold_users for s in self.strategies},
            "users_evaluated": len(self.users),
            "catalogue_size": self.catalogue_size,
            "ks": list(self.ks),
            "seconds": round(self.seconds, 2),
            "metrics": self.summary_rows(),
            "paired_comparison": self.comparison,
            "embeddings": self.embeddings,
            "strategy_seconds": {s.name: round(s.seconds, 2) for s in self.strategies},
        }


@dataclass(frozen=True)
class Plan:
    """What an evaluation is asked to do (`recsys evaluate`'s flags).

    Attributes:
        split: "temporal" (each user's latest interactions held out), "global-time" (every event
            from one moment on), "random" or "cold-items".
        holdout: temporal, random: the share of each user's interactions held out; global-time:
            the share of all events.
        last_n: temporal: hold out each user's last N events instead of a share.
        min_events: Users with fewer events stay in training only.
        cold_share: cold-items: the share of the catalogue playing new items.
        seed: Seed of the split, the user sample and the bootstrap.
        users: Score a seeded sample of this many users (None: all).
        strategies: What to compare; empty: every strategy that can be evaluated here.
        ks: Cut-offs.
        bootstrap: Bootstrap samples.
    """

    split: str = "temporal"
    holdout: float = 0.2
    last_n: int | None = None
    min_events: int = 3
    cold_share: float = 0.2
    seed: int = 0
    users: int | None = None
    strategies: tuple[str, ...] = ()
    ks: tuple[int, ...] = DEFAULT_KS
    bootstrap: int = 1000


def _fix(command: str, split: Split) -> str:
    """How to make a model trained apart that this split may evaluate."""
    if split.kind == "temporal":
        return f"`{command} --holdout H` with the evaluation's --holdout H (or more) and --min-events"
    if split.kind == "global-time":
        return f"`{command} --split global-time --holdout H` with the evaluation's --holdout H (or more)"
    if split.kind == "cold-items":
        return f"`{command} --cold-share S --seed N` with the evaluation's"
    return "evaluate it on the temporal or cold-items split it was trained for"


def finetune_leak(workspace, model: str, split: Split) -> str | None:
    """Why ``model``'s vectors, fine-tuned on the logs, may not be evaluated on ``split`` (None: they
    may: not fine-tuned on the logs, or not on its test events)."""
    meta = registry.embedders(workspace.settings.models_dir).get(model)
    if not meta or meta.get("mode") != "interactions":
        return None
    reason = leak(TrainedOn.from_params(meta.get("params", {})), split)
    return None if reason is None else f"{model}: {reason}; {_fix('recsys finetune --interactions', split)}"


def trained_apart_leak(workspace, name: str, split: Split) -> str | None:
    """Why strategy ``name``'s latest version, trained apart, may not be evaluated on ``split``."""
    latest = registry.latest(workspace, name)
    if latest is None:
        return f"no {name} model yet (recsys train --strategy {name})"
    reason = leak(strategies.get(name).trained_on(latest.params or {}), split)
    if reason is None:
        return None
    return f"{name} v{latest.version}: {reason}; {_fix(f'recsys train --strategy {name}', split)}"


def plan(recommender, asked: Plan, note: Callable[[str], None] = lambda _: None) -> tuple[Split, list[str]]:
    """(the split, the strategies to compare) for ``asked``, or a one-line error.

    Strategies not asked for by name are left out with a ``note`` when they cannot be evaluated
    here: a model trained apart on the split's test events, EASE over a catalogue too large.
    """
    if not 0 < asked.holdout < 1:
        raise RecsysError(f"--holdout must be between 0 and 1, got {asked.holdout}")
    if not 0 < asked.cold_share < 1:
        raise RecsysError(f"--cold-share must be between 0 and 1, got {asked.cold_share}")
    if asked.split not in SPLITS:
        raise RecsysError(f"split {asked.split!r}: use one of {', '.join(SPLITS)}")
    workspace = recommender.workspace
    history = load_history(workspace)
    if asked.split == "temporal":
        split = temporal_split(
            history, fraction=asked.holdout, last_n=asked.last_n, min_events=asked.min_events
        )
    elif asked.split == "global-time":
        split = global_time_split(history, fraction=asked.holdout)
    elif asked.split == "random":
        split = random_split(history, fraction=asked.holdout, seed=asked.seed, min_events=asked.min_events)
    else:
        split = cold_item_split(history, recommender.catalogue().ids, share=asked.cold_share, seed=asked.seed)
    if asked.users is not None:
        split = sample_users(split, asked.users, asked.seed)
    problem = finetune_leak(workspace, recommender.model, split)
    if problem:
        raise RecsysError(problem)
    available = recommender.strategies()
    names = list(asked.strategies) or [
        n for n, cls in strategies.REGISTRY.items() if cls.fits_in_evaluation or n in available
    ]
    names = sorted(set(names), key=names.index)
    for name in list(names):
        cls = strategies.get(name)  # one line naming an unknown strategy
        problem = None if cls.fits_in_evaluation else trained_apart_leak(workspace, name, split)
        if problem and asked.strategies:
            raise RecsysError(problem)
        if problem:
            names.remove(name)
            note(f"{name} left out: {problem}")
    if not asked.strategies:
        from recsys.strategies.ease import memory_gb

        if memory_gb(len(recommender.catalogue())) > workspace.settings.ease_memory_gb:
            for name in {"ease", "ease-recency"} & set(names):
                names.remove(name)
                note(f"{name} left out: the catalogue is too large for its items x items matrix")
    return split, names


def run(
    recommender,
    asked: Plan,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    note: Callable[[str], None] = lambda _: None,
    params: Mapping[str, Mapping] | None = None,
) -> EvaluationReport:
    """Plan, evaluate and save: what `recsys evaluate` does. Returns the stored report.

    ``log``: progress lines (None: quiet); ``note``: what was left out of the plan, and why;
    ``params``: hyper-parameters per strategy to use instead of tuning them."""
    split, names = plan(recommender, asked, note)
    report = evaluate(
        recommender,
        split,
        names,
        asked.ks or DEFAULT_KS,
        seed=asked.seed,
        bootstrap=asked.bootstrap,
        progress=progress,
        log=log,
        params=params,
    )
    report.evaluation_id = save(recommender.workspace, report)
    return report


def evaluate(
    recommender,
    split: Split,
    names: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    seed: int = 0,
    bootstrap: int = 1000,
    progress: bool = False,
    batch: int = 512,
    log=None,
    params: Mapping[str, Mapping] | None = None,
) -> EvaluationReport:
    """Fit every strategy on ``split.train`` (one trained apart, such as the two-tower: its latest
    version) and score them all on the same users, in batches, through ``recommender.rank``: the
    lists a user would be served, given only the training events. ``params``: hyper-parameters
    per strategy, given instead of tuned (its grid is skipped)."""
    from tqdm import tqdm

    start = time.perf_counter()
    ks = tuple(sorted(set(ks)))
    users = split.users
    if not users:
        raise RecsysError(
            "the logs are too small to evaluate: no user has enough events to hold some out "
            "(record more interactions, or `recsys simulate`)"
        )
    item_users: dict[int, int] = defaultdict(int)  # novelty comes from the training events only
    for events in split.train.values():
        for item in {e[0] for e in events}:
            item_users[item] += 1
    space = recommender.space()
    catalogue = len(recommender.catalogue()) if split.candidates is None else len(split.candidates)
    n_users = len(split.train)
    k_max = max(ks)
    scorer = ListMetrics(ks, space.ids, space.matrix, item_users, n_users)
    train = split.train  # frozen: what every strategy derives from it is built once
    fallback = recommender.fitted("popular", train)
    results = []
    for strategy in names:
        t0 = time.perf_counter()
        if log:
            log(f"fitting {strategy} on the training events")
        if strategy == "popular":
            fitted = fallback
        elif strategies.get(strategy).fits_in_evaluation:
            given = (params or {}).get(strategy, {})
            fitted = recommender.fitted(strategy, train, **{**given, "seed": seed})
        else:  # trained apart, for this split (``plan`` checked it with ``splits.leak``)
            fitted = recommender.strategy(strategy)
        result = StrategyResult(strategy, params=_public_params(fitted))
        metrics: dict[str, list[np.ndarray]] = defaultdict(list)
        shown: dict[int, set[int]] = {k: set() for k in ks}
        fell_back = 0
        for begin in tqdm(range(0, len(users), batch), desc=f"evaluate {strategy}", disable=not progress):
            names = users[begin : begin + batch]
            histories = [split.train.get(u, []) for u in names]
            lists = recommender.rank(
                fitted, histories, names, k_max, candidates=split.candidates, explain_hits=False
            )
            cold = [n for n, (hits, _) in enumerate(lists) if hits is None]
            if cold:  # no usable history: served the popular list, scored as such
                fell_back += len(cold)
                backup = recommender.rank(
                    fallback,
                    [histories[n] for n in cold],
                    [names[n] for n in cold],
                    k_max,
                    candidates=split.candidates,
                    explain_hits=False,
                )
                for n, listing in zip(cold, backup, strict=True):
                    lists[n] = listing
            ranked = [[i for i, _ in hits or []] for hits, _ in lists]
            for name, values in scorer.score(ranked, [split.test[u] for u in names]).items():
                metrics[name].append(values)
            for k in ks:
                shown[k].update(i for items in ranked for i in items[:k])
        result.per_user = {name: np.concatenate(parts).tolist() for name, parts in metrics.items()}
        result.coverage = {k: len(shown[k]) / max(catalogue, 1) for k in ks}
        result.cold_users = fell_back
        result.ranks_new_items = not (split.candidates is not None and type(fitted).needs_interactions)
        result.seconds = time.perf_counter() - t0
        results.append(result)
    intervals = {
        r.name: {
            f"{m}@{k}": bootstrap_ci(r.per_user[f"{m}@{k}"], samples=bootstrap, seed=seed)
            for m in ("recall", "ndcg")
            for k in ks
        }
        for r in results
    }
    report = EvaluationReport(split.kind, ks, users, catalogue, results, intervals, params=dict(split.params))
    if len(results) >= 2:
        key = f"recall@{ks[0]}"
        best, second = sorted(results, key=lambda r: r.mean(key), reverse=True)[:2]
        report.comparison = {
            "metric": key,
            "better": best.name,
            "worse": second.name,
            **paired_comparison(best.per_user[key], second.per_user[key], samples=2 * bootstrap, seed=seed),
        }
    report.seconds = time.perf_counter() - start
    return report


def _public_params(fitted) -> dict:
    """Hyper-parameters as chosen (grids included), without bulky or private values."""
    return {k: v for k, v in fitted.params.items() if not k.startswith("_")}


def save(workspace, report: EvaluationReport) -> int:
    """Keep a report in the registry (``auto`` judges by the latest temporal and cold-item ones)."""
    k = 10 if 10 in report.ks else report.ks[0]
    rows = [
        {"strategy": r.name, "version": r.params.get("version"), f"recall@{k}": r.mean(f"recall@{k}")}
        for r in report.strategies
    ]
    for row, r in zip(rows, report.strategies, strict=True):
        row.setdefault("recall@10", row[f"recall@{k}"])
        if report.split == "cold-items":  # how much of the new items it can show at all (auto reads it)
            row["reach"] = r.coverage[k] if r.ranks_new_items else 0.0
    return registry.save_evaluation(workspace, report.split, report.params, rows, report.as_dict())


def write_files(report: EvaluationReport, out: Path) -> None:
    """``metrics.json``, ``metrics.csv`` and ``recall_at_k.png`` (recall@K with 95% bootstrap bands)."""
    from recsys import plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    rows = report.summary_rows()
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    title = f"recall@K, {report.split} split, {len(report.users)} users (95% bootstrap bands)"
    (out / "recall_at_k.png").write_bytes(plots.recall_at_k(rows, title))
