"""The second stage: a learned ranker over the union of several retrievers' candidates.

Retrievers each see one side of a person: what came next in other sequences (transitions), who
liked the same things (EASE with recency), what the pictures look like (the two-tower, image
profiles). A ranker reads them all at once, per candidate: each retriever's score and rank,
popularity now and lately, how close the picture is to the history, and whether the item is new,
so that items nobody has picked yet still compete on their pictures.

This module holds what needs no TensorFlow: the configuration, the candidates and their features
(``Features``); ``model`` holds the Keras ranker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankerConfig:
    """Hyper-parameters of the second stage.

    Attributes:
        per_retriever: Candidates each retriever adds to a list (its best unseen items).
        new_slots: Candidates the newest items add, by picture: items without interactions, best
            first by the two-tower's image profile, so a new item can reach a list at all.
        pretend_new: Share of items treated as new while the ranker trains (their interaction
            features hidden), so it learns to rank new items by their pictures.
        new_item_slot: The place in a list kept for an item added since the model was trained,
            for the people whose candidates it is among the ``new_item_slot`` best by picture (0:
            no such place). The ranker ranks an item nobody has picked yet low (it cannot tell "not
            yet" from "not wanted"); this lets an arrival reach the people it suits best, at the
            cost of one place in their lists, until the next training.
        folds: Rankers trained, each stopping early on its own fifth (a fold) of the lists and
            learning from the rest; they score together (the mean), which steadies a ranker
            learning from a few hundred people.
        hidden: Width of the ranker's hidden layers.
        epochs: Most epochs; training stops earlier when validation recall@10 stops improving.
        patience: Epochs without improvement before stopping.
        learning_rate: Adam step size.
        lists: Lists (people) per batch.
        seed: Seed of initialisation, shuffling and the pretend-new items.
    """

    per_retriever: int = 50
    new_slots: int = 20
    pretend_new: float = 0.1
    new_item_slot: int = 10
    folds: int = 5
    hidden: int = 64
    epochs: int = 60
    patience: int = 6
    learning_rate: float = 0.003
    lists: int = 32
    seed: int = 0


#: Rank given to a candidate a retriever did not score (or ranked beyond this).
RANK_CAP = 1000


@dataclass
class Lists:
    """Candidates and their features, one list per history.

    Attributes:
        rows: Per list, catalogue positions of its candidates.
        features: Per list, (candidates, ``len(names)``) float32.
        names: The feature names, in column order.
    """

    rows: list[np.ndarray]
    features: list[np.ndarray]
    names: list[str]


def ranks(scores: np.ndarray) -> np.ndarray:
    """Per row, each column's rank by score (0: best); -inf scores rank last."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(scores.shape[1])[None, :], axis=1)
    return out


def build_lists(
    scores: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
    seen: Sequence[np.ndarray],
    item_features: Mapping[str, np.ndarray],
    user_features: Mapping[str, np.ndarray],
    new: np.ndarray,
    picture: str,
    config: RankerConfig,
) -> Lists:
    """Candidates (each retriever's best ``per_retriever`` unseen items, and the ``new_slots`` new
    items best by ``picture``'s scores) with their features, per history.

    Args:
        scores: Retriever name -> (histories, items) scores; a new item's are ignored for retrievers
            other than image ones (names starting "image" or "tower").
        valid: Retriever name -> per history, whether it could score it.
        seen: Per history, the catalogue positions already seen (never candidates).
        item_features: Name -> per item value (popularity, newness...).
        user_features: Name -> per history value (history length...).
        new: Per item, True when it has no interactions (or is treated so).
        picture: The retriever whose scores order the new items.
        config: Candidate counts.
    """
    names = []
    for name in scores:
        names += [f"{name}_score", f"{name}_rank", f"{name}_known"]
    names += list(item_features) + list(user_features) + ["new"]
    id_only = [name for name in scores if not name.startswith(("image", "tower"))]
    n_lists, n_items = next(iter(scores.values())).shape
    rank_of = {}
    for name, matrix in scores.items():
        masked = np.array(matrix, dtype=np.float32)
        for n in range(n_lists):
            masked[n, seen[n]] = -np.inf
        if name in id_only:
            masked[:, new] = -np.inf
        rank_of[name] = (masked, ranks(masked))
    out_rows, out_features = [], []
    new_rows = np.nonzero(new)[0]
    for n in range(n_lists):
        picked = []
        for name, (masked, rank) in rank_of.items():
            if valid[name][n]:
                top = np.argpartition(rank[n], min(config.per_retriever, n_items - 1))[: config.per_retriever]
                picked.append(top[np.isfinite(masked[n, top])])
        if len(new_rows) and config.new_slots:
            order = new_rows[np.argsort(-rank_of[picture][0][n, new_rows], kind="stable")]
            fresh = order[~np.isin(order, seen[n])][: config.new_slots]
            picked.append(fresh)
        rows = np.unique(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
        columns = []
        for name, (masked, rank) in rank_of.items():
            ok = valid[name][n] & np.isfinite(masked[n, rows])
            columns.append(np.where(ok, scores[name][n, rows], 0.0))
            columns.append(np.where(ok, np.log1p(np.minimum(rank[n, rows], RANK_CAP)), np.log1p(RANK_CAP)))
            columns.append(ok.astype(np.float32))
        columns += [values[rows] for values in item_features.values()]
        columns += [np.full(len(rows), values[n]) for values in user_features.values()]
        columns.append(new[rows].astype(np.float32))
        out_rows.append(rows)
        out_features.append(np.stack(columns, axis=1).astype(np.float32))
    return Lists(out_rows, out_features, names)
