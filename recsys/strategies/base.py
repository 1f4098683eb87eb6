"""The contract every recommendation strategy keeps, in the spirit of ``implicit``'s models.

A strategy is fitted once on training events (``fit``), then scores many histories at once
(``score``). It answers either with dense scores over the catalogue (``Dense``) or with query
vectors in a vector space (``Queries``), which ``serving.ranking`` turns into ranked, filtered,
explained lists through a faiss index or an exact product. A strategy never imports
``recommend``: what it needs (the catalogue, the image space, the workspace) is handed to it in a
``Context``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recsys import ids as id_lookup
from recsys.events import FrozenHistories, History, item_sequence, recency_weights, weighted_items
from recsys.metrics import mean_recall
from recsys.space import VectorSpace
from recsys.splits import TrainedOn, temporal_split


@dataclass
class Catalogue:
    """The items a strategy ranks: ids ascending, with labels and ages (newest = highest rank).

    Attributes:
        ids: Item ids, ascending.
        labels: Label per id (None where unlabelled).
        newness: 0..1 per id, 1 for the newest item (the tie-break of popularity).
    """

    ids: np.ndarray
    labels: np.ndarray
    newness: np.ndarray

    def rows(self, item_ids: Sequence[int]) -> np.ndarray:
        """Positions of ``item_ids`` in ``ids``; -1 for ids not in the catalogue."""
        return id_lookup.positions(self.ids, item_ids)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Context:
    """What a strategy may use; built by ``Recommender``.

    Attributes:
        workspace: The open workspace (model files, settings).
        catalogue: The items to rank.
        image_space: The image-embedding space (loaded on first call).
        attach_index: Gives a space of the strategy's own an up-to-date faiss index (serving), or
            None to search exactly.
        log: Where notes go (None: quiet).
    """

    workspace: Any
    catalogue: Catalogue
    image_space: Callable[[], VectorSpace]
    attach_index: Callable[[VectorSpace], None] | None = None
    log: Callable[[str], None] | None = None

    @property
    def max_weight(self) -> float:
        return self.workspace.settings.max_weight


@dataclass
class Dense:
    """Scores of each history over every catalogue item (rows aligned with the histories).

    ``valid`` is False for a history the strategy cannot score (the caller falls back).
    """

    scores: np.ndarray
    valid: np.ndarray


@dataclass
class Queries:
    """One query vector per history in ``space`` (searched by index or exact product)."""

    space: VectorSpace
    vectors: np.ndarray
    valid: np.ndarray


@dataclass
class Strategy(ABC):
    """Fitted on training events, then scoring histories in batches.

    Attributes:
        context: The catalogue, image space and workspace it works with.
        params: Hyper-parameters (chosen on validation events, or loaded with a saved version).
    """

    context: Context
    params: dict = field(default_factory=dict)

    #: Its name in the registry, the CLI and the API.
    name: ClassVar[str] = ""
    #: Serving needs a trained version from the model registry (`recsys train --strategy NAME`).
    needs_model: ClassVar[bool] = False
    #: `recsys evaluate` fits it on the split itself (False: it evaluates a version trained apart).
    fits_in_evaluation: ClassVar[bool] = True
    #: It ranks only items that have interactions (new items get no score of their own).
    needs_interactions: ClassVar[bool] = True
    #: Its lists follow the history, so each item is explained by the history item nearest to it.
    explains: ClassVar[bool] = True
    #: A saved version serves only over the vectors (``--model``) it was trained with.
    bound_to_vectors: ClassVar[bool] = False
    #: The files ``write`` saves, which make a registry version complete (``recsys doctor`` checks).
    files: ClassVar[tuple[str, ...]] = ()

    def fit(self, train: Mapping[str, History]) -> Strategy:
        """Learn from training events (user -> events); stateless strategies keep nothing."""
        return self

    def fit_serving(self) -> Strategy:
        """Get ready to serve from the workspace as it is now: the saved version (``params``'s
        "version", default the latest) when the strategy needs a trained model, else nothing."""
        if self.needs_model:
            from recsys import registry

            row = registry.get(self.context.workspace, self.name, self.params.get("version"))
            self.read(registry.path_of(self.context.workspace, row, self.files))
            self.params = {**(row.params or {}), "version": row.version}
        return self

    @classmethod
    def trained_on(cls, params: Mapping) -> TrainedOn:
        """What a saved version with these recorded parameters left out of its training (the
        evaluation checks it against its split with ``splits.leak``)."""
        return TrainedOn.from_params(params)

    def write(self, folder: Path) -> None:
        """Save what ``fit`` learnt into a model-registry folder (strategies with a model)."""
        raise NotImplementedError(f"{self.name} has no model files")

    def read(self, folder: Path) -> None:
        """Load what ``write`` saved."""
        raise NotImplementedError(f"{self.name} has no model files")

    @abstractmethod
    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense | Queries:
        """Scores for each history (``users`` name them where known; None for anonymous)."""

    def describe(self) -> dict:
        """What is being served: name, hyper-parameters, model version where there is one."""
        return {"strategy": self.name, "params": self.params}


def _derived(source, catalogue: Catalogue, max_weight: float, build: Callable):
    """``build()``, kept on a frozen ``source`` for this catalogue and weight cap (a copy is returned:
    callers may change what they get)."""
    derived = getattr(source, "derived", None)
    key = (id(catalogue), max_weight)
    if derived is not None and key in derived and derived[key][0] is catalogue:
        matrix, users = derived[key][1]
        return matrix.copy(), list(users)
    matrix, users = build()
    if derived is not None:
        derived[key] = (catalogue, (matrix.copy(), list(users)))
    return matrix, users


def recency_rows(
    histories: Sequence[History], catalogue: Catalogue, half_life: float, last: int | None = None
):
    """histories x catalogue sparse matrix (scipy CSR) of each history's distinct items, the latest
    weighing 1 and the weight halving every ``half_life`` items back (0: all 1); ``last``: only the
    latest so many items. Items not in the catalogue are left out."""
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for n, history in enumerate(histories):
        positions = catalogue.rows(item_sequence(history)[-last:] if last else item_sequence(history))
        weights = recency_weights(len(positions), half_life)[positions >= 0]
        positions = positions[positions >= 0]
        rows.extend([n] * len(positions))
        cols.extend(positions.tolist())
        vals.extend(weights.tolist())
    return csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(histories), len(catalogue)))


def interaction_matrix(train: Mapping[str, History], catalogue: Catalogue, max_weight: float):
    """users x items sparse matrix of summed event weights (scipy CSR), and the user order."""
    return _derived(train, catalogue, max_weight, lambda: _weights_matrix(train, catalogue, max_weight))


def _weights_matrix(train: Mapping[str, History], catalogue: Catalogue, max_weight: float):
    from scipy.sparse import csr_matrix

    users = sorted(train)
    rows, cols, vals = [], [], []
    for u, user in enumerate(users):
        for item, w in weighted_items(train[user], max_weight).items():
            rows.append(u)
            cols.append(item)
            vals.append(w)
    positions = catalogue.rows(cols)
    keep = positions >= 0
    matrix = csr_matrix(
        (np.asarray(vals, np.float32)[keep], (np.asarray(rows, np.int64)[keep], positions[keep])),
        shape=(len(users), len(catalogue)),
    )
    matrix.sum_duplicates()
    return matrix, users


def history_matrix(histories: Sequence[History], catalogue: Catalogue, max_weight: float):
    """histories x items sparse matrix of summed event weights (scipy CSR)."""
    return _derived(
        histories,
        catalogue,
        max_weight,
        lambda: _weights_matrix(dict(enumerate(histories)), catalogue, max_weight),
    )[0]


def top_k_rows(
    scores: np.ndarray, exclude: Sequence[np.ndarray], k: int, blocked: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per row: the positions of the ``k`` best scores, best first, skipping ``exclude[row]`` and
    every column ``blocked`` holds True for (one shared row of ``scores`` is broadcast).

    A block of rows at a time, in array operations; float32 scores are ranked as they are."""
    out: list[np.ndarray] = []
    n = scores.shape[1]
    take = min(k, n)
    if take <= 0:
        return [np.zeros(0, np.int64) for _ in exclude]
    step = max(1, 8_000_000 // n)  # rows per block of scores
    precision = np.result_type(scores.dtype, np.float32)
    for start in range(0, len(exclude), step):
        part = exclude[start : start + step]
        if scores.shape[0] > 1:
            values = np.array(scores[start : start + len(part)], dtype=precision)
        else:
            values = np.repeat(np.asarray(scores[:1], dtype=precision), len(part), axis=0)
        if blocked is not None:
            values[:, blocked] = -np.inf
        lengths = [len(e) for e in part]
        if sum(lengths):
            values[np.repeat(np.arange(len(part)), lengths), np.concatenate(part).astype(np.int64)] = -np.inf
        top = (
            np.argpartition(-values, take - 1, axis=1)[:, :take]
            if take < n
            else np.tile(np.arange(n), (len(part), 1))
        )
        best = np.take_along_axis(values, top, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")
        top, best = np.take_along_axis(top, order, axis=1), np.take_along_axis(best, order, axis=1)
        out.extend(top[row][np.isfinite(best[row])] for row in range(len(part)))
    return out


@dataclass
class Validation:
    """Held-out items of each user, and their training histories in batches (with what each has
    seen), prepared once and scored for every grid point."""

    test: Mapping[str, set]
    batches: list[tuple[list[str], FrozenHistories, list[np.ndarray]]]


def validation_set(train: Mapping[str, History], test: Mapping[str, set], catalogue: Catalogue) -> Validation:
    users = sorted(test)
    batches = []
    for start in range(0, len(users), 1024):
        batch = users[start : start + 1024]
        histories = FrozenHistories([train.get(u, []) for u in batch])
        seen = [catalogue.rows(sorted({e[0] for e in h})) for h in histories]
        batches.append((batch, histories, [s[s >= 0] for s in seen]))
    return Validation(test, batches)


def validation_recall(strategy: Strategy, validation: Validation, k: int = 10) -> float:
    """Mean recall@k of a fitted Dense strategy on held-out items, training items excluded."""
    ids, tops, relevant = strategy.context.catalogue.ids, [], []
    for batch, histories, seen in validation.batches:
        result = strategy.score(histories, batch)
        tops.extend(ids[top].tolist() for top in top_k_rows(result.scores, seen, k))
        relevant.extend(validation.test[user] for user in batch)
    return mean_recall(tops, relevant)


#: Most users whose events tune hyper-parameters (the final fit uses every user).
TUNING_USERS = 20_000


def choose_params(
    make: Callable[[dict], Strategy], grid: Sequence[dict], train: Mapping[str, History], log=None
) -> tuple[dict, list[dict]]:
    """The grid point with the best recall@10 on the latest 10% of each user's training events.

    The two-tower stops early the same way: the test events of an evaluation are never looked at.
    """
    if len(train) > TUNING_USERS:  # a seeded sample tunes as well, at a fraction of the cost
        keep = np.random.default_rng(0).choice(sorted(train), size=TUNING_USERS, replace=False)
        train = {u: train[u] for u in keep}
    split = temporal_split(train, fraction=0.1, min_events=3)
    events = split.train  # frozen: the matrices every grid point fits on are built once
    validation: Validation | None = None
    table = []
    for params in grid:
        strategy = make(params).fit(events)
        if validation is None:
            validation = validation_set(events, split.test, strategy.context.catalogue)
        recall = validation_recall(strategy, validation)
        table.append({**params, "val_recall@10": round(recall, 5)})
        if log:
            log(f"  {params}: validation recall@10 {recall:.4f}")
    best = max(table, key=lambda row: row["val_recall@10"])
    return {k: v for k, v in best.items() if k != "val_recall@10"}, table
