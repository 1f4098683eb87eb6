"""The one ranking path: a fitted strategy's scores -> unseen, filtered, explained top-k lists.

Serving, the offline evaluation and ``bench/`` all rank through ``rank``, so what is measured is
what is served. A strategy answers with query vectors (searched through a faiss index, or by one
exact product for a batch) or with dense scores over the catalogue; either way the same exclusions
(what was seen), label filters, MMR and "because you viewed" apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recsys import ids as id_lookup
from recsys.events import History
from recsys.space import VectorSpace, explain, mmr, retrieve
from recsys.strategies import Catalogue, Queries, Strategy
from recsys.strategies.base import top_k_rows

Ranked = tuple[list[tuple[int, float]] | None, dict[int, int]]


def rank(
    served: Strategy,
    histories: Sequence[History],
    users: Sequence[str | None],
    k: int,
    *,
    catalogue: Catalogue,
    image_space: Callable[[], VectorSpace],
    allowed: Callable[[str | None], bool] | None = None,
    diversify: bool = False,
    lam: float = 0.7,
    candidates: np.ndarray | None = None,
    explain_hits: bool = True,
    history_limit: int | None = None,
) -> list[Ranked]:
    """Per history: its top-``k`` unseen (item id, score), best first, and explanations (result id ->
    history item id), or (None, {}) when the strategy cannot score it.

    Args:
        served: The fitted strategy.
        histories: Events per list (what was seen is never ranked).
        users: Who each history belongs to (None: anonymous).
        k: Items per list.
        catalogue: The items dense scores are over.
        image_space: The image vectors (MMR and explanations of dense scores need them).
        allowed: A predicate on labels (None: every label).
        diversify: Re-rank with maximal marginal relevance, ``lam`` relevance to similarity.
        lam: See ``diversify``.
        candidates: Rank only these ids (the cold-item split's new items).
        explain_hits: Find each item's "because you viewed" (the evaluation skips it).
        history_limit: Read only each history's latest this many events, for everything above:
            a list then costs the same however long a history grows.
    """
    if history_limit is not None:
        histories = [h[-history_limit:] if len(h) > history_limit else h for h in histories]
    scores = served.score(histories, users)
    fetch = max(k * 5, 50) if diversify else k
    out: list[Ranked] = []
    if isinstance(scores, Queries):
        space = scores.space
        exact = None
        if space.index is None or candidates is not None:  # evaluation: one product for the batch
            exact = top_dense(
                scores.vectors @ space.matrix.T,
                space.ids,
                space.labels,
                histories,
                fetch,
                allowed,
                candidates,
            )
        for n, history in enumerate(histories):
            if not scores.valid[n]:
                out.append((None, {}))
                continue
            seen = {e[0] for e in history}
            hits = exact[n] if exact is not None else retrieve(space, scores.vectors[n], fetch, seen, allowed)
            if diversify:
                hits = mmr(space, scores.vectors[n], hits, k, lam)
            out.append((hits, explain(space, [h[0] for h in hits], seen) if explain_hits else {}))
        return out
    tops = top_dense(scores.scores, catalogue.ids, catalogue.labels, histories, fetch, allowed, candidates)
    image = image_space() if (diversify or (explain_hits and served.explains)) else None
    for n, history in enumerate(histories):
        if not scores.valid[n]:
            out.append((None, {}))
            continue
        hits = tops[n]
        if diversify and hits:
            top, bottom = hits[0][1], hits[-1][1]
            scaled = [(i, (s - bottom) / (top - bottom) if top > bottom else 1.0) for i, s in hits]
            order = dict(hits)
            hits = [(i, order[i]) for i, _ in mmr(image, None, scaled, k, lam)]
        seen = {e[0] for e in history}
        because = explain(image, [h[0] for h in hits], seen) if explain_hits and served.explains else {}
        out.append((hits, because))
    return out


def top_dense(
    scores: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    histories: Sequence[History],
    k: int,
    allowed: Callable[[str | None], bool] | None,
    candidates: np.ndarray | None,
) -> list[list[tuple[int, float]]]:
    """Per row of ``scores`` (over ``ids``; one shared row is broadcast): the ``k`` best unseen
    (id, score), best first, within ``candidates`` and the label filter."""
    blocked = np.zeros(len(ids), dtype=bool)
    if allowed is not None:
        blocked |= ~np.array([bool(allowed(label)) for label in labels], dtype=bool)
    if candidates is not None:
        blocked |= ~np.isin(ids, candidates)
    seen = [
        id_lookup.rows(ids, np.fromiter({e[0] for e in history}, dtype=np.int64)) for history in histories
    ]
    tops = top_k_rows(scores, seen, k, blocked)
    rows = (scores[0 if scores.shape[0] == 1 else n] for n in range(len(tops)))
    return [
        list(zip(ids[top].tolist(), np.asarray(row, np.float64)[top].tolist(), strict=True))
        for row, top in zip(rows, tops, strict=True)
    ]
