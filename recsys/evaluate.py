"""Offline evaluation: which recommender should I ship, and how sure am I?

Splits each user's events into training and held-out parts, asks every strategy for a ranked list
through the same ``Recommender`` the product serves with (given only the training events), and
scores the lists with the metrics the field uses, with bootstrap intervals over users.

Pure metric functions come first (tested against hand-computed values and a brute-force
implementation); ``evaluate`` wires them to a workspace.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from recsys.errors import RecsysError

DEFAULT_KS = (10, 20, 50, 100)
Event = tuple[int, str, float | None, datetime]  # (item id, event type, weight, time)


# --- embedding sanity check ----------------------------------------------------------------


def knn_accuracy(vectors: np.ndarray, labels: list[str], k: int = 1) -> dict:
    """Leave-one-out k-NN: how often the majority label of an item's k nearest others is its own.

    The seed's sanity check: if neighbours in embedding space do not share labels, no
    recommender built on these vectors will look sensible. Ties go to the nearer neighbour.
    """
    from recsys.index import exact_search

    n = len(labels)
    if n < 2 or len(vectors) != n:
        raise RecsysError(f"knn-accuracy needs at least 2 labelled embeddings, found {n}")
    if k < 1 or k >= n:
        raise RecsysError(f"knn-accuracy: k must be between 1 and {n - 1}, got {k}")
    labels_arr = np.asarray(labels, dtype=object)
    correct = np.zeros(n, dtype=bool)
    for start in range(0, n, 2048):
        _, rows = exact_search(vectors, vectors[start : start + 2048], k + 1)
        for offset, row in enumerate(rows):
            i = start + offset
            # Drop the item itself by identity, not position: byte-identical duplicates tie with it.
            neighbours = [r for r in row if r != i and r >= 0][:k]
            votes = Counter(labels_arr[neighbours])
            best = max(votes.values())
            winner = next(labels_arr[r] for r in neighbours if votes[labels_arr[r]] == best)
            correct[i] = winner == labels_arr[i]
    per_label = {str(lab): float(correct[labels_arr == lab].mean()) for lab in sorted(set(labels))}
    return {"k": k, "items": n, "accuracy": float(correct.mean()), "per_label": per_label}


# --- metrics (pure) ------------------------------------------------------------------------


def ranking_metrics(ranked: Sequence[int], relevant: set[int], k: int) -> dict[str, float]:
    """recall, precision, NDCG, AP and hit rate at ``k`` of one ranked list (binary relevance).

    AP@k is normalised by min(|relevant|, k), so a perfect list scores 1 even when more items
    are relevant than fit in k. An empty list scores 0 everywhere; no relevant items is an error.
    """
    if not relevant:
        raise ValueError("a user without held-out items cannot be scored")
    top = list(ranked[:k])
    hits = [1.0 if item in relevant else 0.0 for item in top]
    n_hits = sum(hits)
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    precisions = [sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h]
    return {
        "recall": n_hits / len(relevant),
        "precision": n_hits / k,
        "ndcg": dcg / ideal,
        "map": sum(precisions) / min(len(relevant), k),
        "hit_rate": 1.0 if n_hits else 0.0,
    }


def reciprocal_rank(ranked: Sequence[int], relevant: set[int]) -> float:
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            return 1.0 / position
    return 0.0


def intra_list_diversity(ranked: Sequence[int], vectors: dict[int, np.ndarray]) -> float:
    """Mean pairwise cosine distance between the (unit) vectors of a list; 0 for < 2 items."""
    rows = [vectors[i] for i in ranked if i in vectors]
    if len(rows) < 2:
        return 0.0
    m = np.stack(rows)
    sims = m @ m.T
    n = len(rows)
    return float((n * (n - 1) - (sims.sum() - np.trace(sims))) / (n * (n - 1)))


def novelty(ranked: Sequence[int], item_users: dict[int, int], n_users: int) -> float:
    """Mean self-information -log2 p(i), p(i) = (training users of i + 1) / (users + 1)."""
    if not ranked:
        return 0.0
    return float(np.mean([-math.log2((item_users.get(i, 0) + 1) / (n_users + 1)) for i in ranked]))


class ListMetrics:
    """The metrics above for a batch of lists at once (array operations over users, not one
    Python call per user, metric and cut-off); the functions above are the definitions, and a test
    holds the two equal.

    Args:
        ks: Cut-offs.
        ids: Item ids of ``matrix``'s rows, ascending (diversity: items without a row are skipped).
        matrix: Unit vectors the diversity is measured in.
        item_users: Training users per item (novelty).
        n_users: Training users.
    """

    def __init__(
        self, ks: Sequence[int], ids: np.ndarray, matrix: np.ndarray, item_users: dict[int, int], n_users: int
    ) -> None:
        self.ks = tuple(sorted(set(ks)))
        self.ids, self.matrix = np.asarray(ids, dtype=np.int64), matrix
        keys = np.array(sorted(item_users), dtype=np.int64)
        self._novelty_keys = keys
        self._novelty_values = -np.log2(
            (np.array([item_users[k] for k in keys.tolist()]) + 1) / (n_users + 1)
        )
        self._unseen_novelty = -math.log2(1 / (n_users + 1))

    def _lookup(self, keys: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``table``, found) for each of ``keys``."""
        if len(table) == 0:
            return np.zeros(keys.shape, np.int64), np.zeros(keys.shape, bool)
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return pos, table[pos] == keys

    def score(self, lists: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> dict[str, np.ndarray]:
        """Per-user values of every metric (keys like "recall@10", "mrr"), aligned with ``lists``."""
        n, width = len(lists), max(max((len(x) for x in lists), default=0), 1)
        ranked = np.full((n, width), -1, dtype=np.int64)
        for row, items in enumerate(lists):
            ranked[row, : len(items)] = items
        present = ranked >= 0
        if any(not r for r in relevant):
            raise ValueError("a user without held-out items cannot be scored")
        n_relevant = np.array([len(r) for r in relevant], dtype=np.float64)
        wanted = np.concatenate([np.fromiter(r, np.int64, len(r)) for r in relevant])
        owner = np.repeat(np.arange(n, dtype=np.int64), n_relevant.astype(np.int64))
        span = int(max(ranked.max(initial=0), wanted.max(initial=0))) + 1
        hits = np.isin(np.arange(n)[:, None] * span + ranked, owner * span + wanted) & present
        discount = 1.0 / np.log2(np.arange(2, max(width, max(self.ks)) + 2))
        ideal = np.cumsum(discount)
        found_at = np.cumsum(hits, axis=1)
        rows, valid = self._lookup(ranked, self.ids)
        valid &= present
        info_pos, known = self._lookup(ranked, self._novelty_keys)
        information = np.where(
            known, self._novelty_values[info_pos] if len(info_pos) else 0, self._unseen_novelty
        )
        information = np.where(present, information, 0.0)
        out: dict[str, np.ndarray] = {}
        sums = np.zeros((n, self.matrix.shape[1]), np.float64)
        norms = np.zeros(n)
        done = 0
        for k in self.ks:
            top = min(k, width)
            h = hits[:, :top]
            n_hits = h.sum(axis=1).astype(np.float64)
            out[f"recall@{k}"] = n_hits / n_relevant
            out[f"precision@{k}"] = n_hits / k
            out[f"ndcg@{k}"] = (h * discount[:top]).sum(axis=1) / ideal[
                np.minimum(n_relevant, k).astype(int) - 1
            ]
            precision_at = found_at[:, :top] / np.arange(1, top + 1)
            out[f"map@{k}"] = (precision_at * h).sum(axis=1) / np.minimum(n_relevant, k)
            out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
            for j in range(done, top):  # running sums of the vectors: pairwise cosines without pairs
                at = valid[:, j]
                v = self.matrix[rows[at, j]].astype(np.float64)
                sums[at] += v
                norms[at] += (v * v).sum(axis=1)
            done = max(done, top)
            count = valid[:, :top].sum(axis=1).astype(np.float64)
            pairs = count * (count - 1)
            similar = (sums * sums).sum(axis=1) - norms
            out[f"diversity@{k}"] = np.where(pairs > 0, (pairs - similar) / np.maximum(pairs, 1), 0.0)
            listed = present[:, :top].sum(axis=1)
            out[f"novelty@{k}"] = information[:, :top].sum(axis=1) / np.maximum(listed, 1)
        first = np.argmax(hits, axis=1)
        out["mrr"] = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
        return out


def bootstrap_ci(values: Sequence[float], *, samples: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of the mean over users."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def paired_comparison(a: Sequence[float], b: Sequence[float], *, samples: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over users of mean(a - b): the difference, its 95% interval, a p-value."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    p = 2 * min(np.mean(means <= 0), np.mean(means >= 0))
    return {
        "mean_difference": float(diff.mean()),
        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
        "p_value": float(min(1.0, p)),
        "users_better": int(np.sum(diff > 0)),
        "users_worse": int(np.sum(diff < 0)),
    }


# --- splits --------------------------------------------------------------------------------


class FrozenEvents(dict):
    """A split's training events (user -> events), read only, so what is derived from them is built
    once: ``evaluate`` fits every strategy, and ``choose_params`` every grid point, on the same
    events (at 100,000 users the interaction matrix took seconds each time)."""

    def __init__(self, events: dict[str, list[Event]]) -> None:
        super().__init__(events)
        self.derived: dict = {}

    def _read_only(self, *args, **kwargs):
        raise TypeError("frozen training events cannot change")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _read_only


@dataclass
class Split:
    """Per user: training events (what the recommender may see) and held-out item ids.

    ``candidates``: the only items a list may hold (the cold-item split's new items), else None.
    """

    train: dict[str, list[Event]]
    test: dict[str, set[int]]
    kind: str = "temporal"
    candidates: np.ndarray | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.train, FrozenEvents):
            self.train = FrozenEvents(self.train)

    @property
    def users(self) -> list[str]:
        return sorted(self.test)


def temporal_split(
    history: dict[str, list[Event]],
    *,
    fraction: float = 0.2,
    last_n: int | None = None,
    min_events: int = 3,
) -> Split:
    """Hold out each user's latest events by time (the last ``last_n``, else the last ``fraction``).

    Users with fewer than ``min_events`` events stay in training only (they still count for
    popularity). Held-out items the user already had in training are not counted: a recommender
    never shows what was seen.
    """
    train, test = {}, {}
    for user, events in history.items():
        events = sorted(events, key=lambda e: (e[3], e[0]))
        if len(events) < min_events:
            train[user] = events
            continue
        n_test = last_n if last_n else max(1, int(round(len(events) * fraction)))
        n_test = min(n_test, len(events) - 1)
        train[user], held = events[:-n_test], events[-n_test:]
        seen = {e[0] for e in train[user]}
        items = {e[0] for e in held} - seen
        if items:
            test[user] = items
    return Split(train, test, "temporal")


def random_split(
    history: dict[str, list[Event]], *, fraction: float = 0.2, seed: int = 0, min_events: int = 3
) -> Split:
    """Hold out a random ``fraction`` of each user's events (deterministic with ``seed``)."""
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for user in sorted(history):
        events = sorted(history[user], key=lambda e: (e[3], e[0]))
        if len(events) < min_events:
            train[user] = events
            continue
        n_test = min(len(events) - 1, max(1, int(round(len(events) * fraction))))
        held_rows = set(rng.choice(len(events), size=n_test, replace=False).tolist())
        train[user] = [e for i, e in enumerate(events) if i not in held_rows]
        items = {events[i][0] for i in held_rows} - {e[0] for e in train[user]}
        if items:
            test[user] = items
    return Split(train, test, "random")


def new_items(item_ids: Sequence[int], share: float, seed: int) -> np.ndarray:
    """The seeded random ``share`` of the catalogue that plays "new arrivals" (sorted ids)."""
    ids = np.sort(np.asarray(item_ids, dtype=np.int64))
    n = int(round(len(ids) * share))
    picked = np.random.default_rng(seed).choice(len(ids), size=n, replace=False) if n else []
    return np.sort(ids[picked])


def cold_item_split(
    history: dict[str, list[Event]], item_ids: Sequence[int], *, share: float = 0.2, seed: int = 0
) -> Split:
    """New items: every event on a seeded random ``share`` of the catalogue leaves training; each
    user's events on them are the test set; users with no training events are left out; lists
    may hold new items only (a "new arrivals" shelf)."""
    new = new_items(item_ids, share, seed)
    is_new = set(new.tolist())
    train, test = {}, {}
    for user, events in history.items():
        kept = [e for e in events if e[0] not in is_new]
        if kept:
            train[user] = kept
            items = {e[0] for e in events if e[0] in is_new}
            if items:
                test[user] = items
    return Split(train, test, "cold-items", new, {"cold_share": share, "seed": seed})


# --- what a split may evaluate ---------------------------------------------------------------


def two_tower_leak(workspace, split: Split) -> str | None:
    """Why evaluating the latest two-tower on ``split`` would score it on what it trained on
    (None: it would not)."""
    from recsys.twotower import latest_version

    latest = latest_version(workspace)
    if latest is None:
        return "no two-tower model yet (recsys train)"
    params = latest.params or {}
    if params.get("warm_start_from"):
        return f"two-tower v{latest.version} was warm-started from a model that saw every event"
    if split.kind == "temporal":
        same = (
            split.params.get("last_n") is None
            and abs(params.get("holdout", -1) - split.params["holdout"]) < 1e-9
            and params.get("min_events") == split.params["min_events"]
            and not params.get("cold_share")
        )
        fix = "`recsys train --holdout H` with the evaluation's --holdout H and --min-events"
    elif split.kind == "cold-items":
        same = (
            abs((params.get("cold_share") or -1) - split.params["cold_share"]) < 1e-9
            and params.get("seed") == split.params["seed"]
        )
        fix = "`recsys train --cold-share S --seed N` with the evaluation's"
    else:
        same, fix = False, "evaluate it on the temporal or cold-items split it was trained for"
    if same:
        return None
    return (
        f"two-tower v{latest.version} was trained with holdout={params.get('holdout')}, "
        f"cold_share={params.get('cold_share')}, seed={params.get('seed')}: this {split.kind} split "
        f"would score it on events it trained on; {fix}"
    )


def finetune_leak(workspace, model: str, split: Split) -> str | None:
    """Why evaluating ``model``'s vectors, fine-tuned on the logs, on ``split`` would score them on what
    they learned from (None: they were not fine-tuned on the logs, or not on its test events)."""
    from recsys import finetune

    meta = finetune.registered(workspace.settings.models_dir).get(model)
    if not meta or meta.get("mode") != "interactions":
        return None
    params = meta.get("params", {})
    if split.kind == "temporal":
        safe = split.params.get("last_n") is None and split.params["min_events"] == 3
        safe = safe and params.get("holdout", 0) >= split.params["holdout"] - 1e-9
        fix = "`recsys finetune --interactions --holdout H` with the evaluation's H (or more)"
    elif split.kind == "cold-items":
        safe = abs(params.get("cold_share", 0) - split.params["cold_share"]) < 1e-9
        safe = safe and params.get("seed") == split.params["seed"]
        fix = "`recsys finetune --interactions --cold-share S --seed N` with the evaluation's"
    else:
        safe, fix = False, "evaluate it on the temporal or cold-items split it was fine-tuned for"
    if safe:
        return None
    return (
        f"{model} was fine-tuned on the logs with holdout={params.get('holdout')}, cold_share="
        f"{params.get('cold_share')}, seed={params.get('seed')}: this {split.kind} split would score it "
        f"on events it learned from; {fix}"
    )


# --- the evaluation ------------------------------------------------------------------------


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


def load_history(workspace) -> dict[str, list[Event]]:
    """Every user's events, oldest first."""
    from sqlalchemy import select

    from recsys import store

    with workspace.session() as session:
        rows = session.execute(
            select(
                store.User.key,
                store.Interaction.item_id,
                store.Interaction.event,
                store.Interaction.weight,
                store.Interaction.ts,
            )
            .join(store.User, store.User.id == store.Interaction.user_id)
            .order_by(store.Interaction.ts, store.Interaction.id)
        ).all()
    history: dict[str, list[Event]] = defaultdict(list)
    for user, item, event, weight, ts in rows:
        history[user].append((item, event, weight, store.as_utc(ts)))
    return dict(history)


def evaluate(
    recommender,
    split: Split,
    strategies: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    seed: int = 0,
    bootstrap: int = 1000,
    progress: bool = False,
    batch: int = 512,
    log=None,
) -> EvaluationReport:
    """Fit every strategy on ``split.train`` (two-tower: its version trained for this split) and
    score them all on the same users, in batches, through ``recommender.rank``: the lists a user
    would be served, given only the training events."""
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
    for strategy in strategies:
        t0 = time.perf_counter()
        if log:
            log(f"fitting {strategy} on the training events")
        fitted = fallback if strategy == "popular" else recommender.fitted(strategy, train, seed=seed)
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


def save_evaluation(workspace, report: EvaluationReport) -> int:
    """Keep a report in the database (``auto`` serves the best of the latest temporal one)."""
    from recsys import store

    k = 10 if 10 in report.ks else report.ks[0]
    rows = [
        {"strategy": r.name, "version": r.params.get("version"), f"recall@{k}": r.mean(f"recall@{k}")}
        for r in report.strategies
    ]
    for row in rows:
        row.setdefault("recall@10", row[f"recall@{k}"])
    with workspace.session() as s, s.begin():
        row = store.Evaluation(
            created_at=store.utcnow(),
            split=report.split,
            params=report.params,
            strategies=rows,
            report=report.as_dict(),
        )
        s.add(row)
        s.flush()
        return row.id


def latest_evaluations(workspace, split: str | None = None) -> list:
    """Stored evaluations, newest first (optionally of one split)."""
    from sqlalchemy import select

    from recsys import store

    query = select(store.Evaluation).order_by(store.Evaluation.id.desc()).limit(50)
    if split is not None:
        query = query.where(store.Evaluation.split == split)
    with workspace.session() as s:
        return list(s.scalars(query))


def plot_recall(report: EvaluationReport, path) -> None:
    """recall@K per strategy with its 95% bootstrap band."""
    from pathlib import Path

    from recsys import plots

    title = f"recall@K, {report.split} split, {len(report.users)} users (95% bootstrap bands)"
    Path(path).write_bytes(plots.recall_at_k(report.summary_rows(), title))
