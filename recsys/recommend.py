"""The one API the CLI, the web page and the evaluation share: ``Recommender``.

rec = Recommender(workspace)
rec.record("ana", "tulip/123")                 # same path as `recsys record` and the web
rec.recommend("ana", k=10)                     # profile -> faiss -> unseen items, explained
rec.similar("tulip/123", k=10)                 # item-to-item
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import func, select

from recsys import store
from recsys.errors import NotAnImage, NotFound, RecsysError, TooLarge
from recsys.index import ItemIndex, exact_search
from recsys.interactions import Event, KnownIds, RecordReport, record, user_key
from recsys.profiles import history_weights, profile_vector

STRATEGIES = ("average", "popular", "random", "two-tower")


@dataclass(frozen=True)
class Recommendation:
    """One recommended item; ``because`` names the history item that explains it, if any."""

    item_id: int
    key: str
    score: float
    label: str | None = None
    title: str | None = None
    because: str | None = None

    def as_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "key": self.key,
            "score": self.score,
            "label": self.label,
            "title": self.title,
            "because": self.because,
        }


@dataclass
class RecommendationList:
    """What ``Recommender.recommend`` returns: the items and how they were chosen."""

    user: str
    strategy: str
    items: list[Recommendation]
    cold_start: bool = False
    history_size: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "user": self.user,
            "strategy": self.strategy,
            "cold_start": self.cold_start,
            "history_size": self.history_size,
            "notes": self.notes,
            "items": [r.as_dict() for r in self.items],
        }


@dataclass(frozen=True)
class HistoryEntry:
    item_id: int
    key: str
    event: str
    ts: datetime
    label: str | None = None
    title: str | None = None


def center_and_normalise(vectors: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Subtract the catalogue mean, then rescale to unit length.

    Pooled CNN features are all non-negative and share one large common direction; without it,
    the mean of a few views points at what they have in common instead of at "generic photo".
    Measured on flowers5: 5 random tulip views -> >= 9 tulips in the top 10 for 96% of draws,
    against 85% on the raw vectors.
    """
    out = np.asarray(vectors, dtype=np.float32) - center
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return np.where(norms > 1e-6, out / np.maximum(norms, 1e-6), vectors).astype(np.float32)


class VectorSpace:
    """The retrieval vectors of one model, their item ids (sorted), labels, and a faiss index.

    Args:
        ids: Item ids, ascending.
        matrix: One unit vector per id, already centred (see ``center_and_normalise``).
        labels: The label of each id (None where unlabelled).
        center: The mean that was subtracted; queries from outside go through ``transform``.
    """

    def __init__(
        self,
        ids: np.ndarray,
        matrix: np.ndarray,
        labels: Sequence[str | None],
        center: np.ndarray,
        name: str = "",
    ) -> None:
        self.name = name
        self.ids = np.asarray(ids, dtype=np.int64)
        self.matrix = matrix
        self.labels = np.asarray(labels, dtype=object)
        self.center = np.asarray(center, dtype=np.float32)
        self.index: ItemIndex | None = None

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """A raw model vector (e.g. of an uploaded image) in this space."""
        return center_and_normalise(np.asarray(raw, dtype=np.float32), self.center)

    def rows(self, item_ids: Sequence[int]) -> np.ndarray:
        """Row numbers of the given ids; ids without a vector are dropped."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self.ids) == 0 or len(item_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, item_ids), len(self.ids) - 1)
        return pos[self.ids[pos] == item_ids]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index is not None:
            return self.index.search(query, k)
        scores, rows = exact_search(self.matrix, query, k)
        return scores, np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)


def label_filter(labels: Sequence[str] | None, exclude_labels: Sequence[str] | None) -> Callable | None:
    """A predicate on an item's label, or None when there is nothing to filter."""
    keep = set(labels or [])
    drop = set(exclude_labels or [])
    if not keep and not drop:
        return None
    return lambda label: (not keep or label in keep) and label not in drop


def retrieve(
    space: VectorSpace,
    query: np.ndarray,
    k: int,
    exclude: set[int],
    allowed: Callable[[str | None], bool] | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` best (item id, score) for ``query``, skipping ``exclude`` and disallowed labels.

    Over-fetches by the size of the exclusion set and widens the search until ``k`` survive or the
    catalogue is exhausted, so excluded items never push the list below ``k``.
    """
    n = len(space.ids)
    fetch = min(n, k + len(exclude) + 10)
    while True:
        scores, ids = space.search(query, fetch)
        hits = []
        for score, item_id in zip(scores[0], ids[0], strict=True):
            item_id = int(item_id)
            if item_id < 0 or item_id in exclude:
                continue
            if allowed is not None:
                row = np.searchsorted(space.ids, item_id)
                if not allowed(space.labels[row]):
                    continue
            hits.append((item_id, float(score)))
            if len(hits) == k:
                return hits
        if fetch >= n:
            return hits
        fetch = min(n, fetch * 4)


def mmr(
    space: VectorSpace, query: np.ndarray, candidates: list[tuple[int, float]], k: int, lam: float
) -> list[tuple[int, float]]:
    """Maximal marginal relevance: trade relevance to the profile against similarity to picks."""
    if not candidates:
        return []
    rows = space.rows([c[0] for c in candidates])
    vecs = space.matrix[rows]
    relevance = np.array([c[1] for c in candidates], dtype=np.float32)
    chosen: list[int] = []
    max_sim = np.full(len(candidates), -np.inf, dtype=np.float32)
    for _ in range(min(k, len(candidates))):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = lam * relevance - (1 - lam) * redundancy
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
    return [candidates[i] for i in chosen]


def space_profile(space: VectorSpace, weights: dict[int, float]) -> np.ndarray | None:
    """A profile in ``space`` from {item id: weight}; items without a vector are ignored."""
    if not weights:
        return None
    rows = space.rows(np.fromiter(weights, dtype=np.int64))
    w = np.array([weights[int(space.ids[r])] for r in rows], dtype=np.float32)
    return profile_vector(rows, w, space.matrix)


def explain(space: VectorSpace, result_ids: Sequence[int], history_ids: set[int]) -> dict[int, int]:
    """For each result, the history item whose vector is nearest to it ("because you viewed")."""
    hist_rows = space.rows(np.array(sorted(history_ids), dtype=np.int64))
    res_rows = space.rows(result_ids)
    if len(hist_rows) == 0 or len(res_rows) == 0:
        return {}
    sims = space.matrix[res_rows] @ space.matrix[hist_rows].T
    nearest = space.ids[hist_rows][np.argmax(sims, axis=1)]
    return {int(space.ids[r]): int(h) for r, h in zip(res_rows, nearest, strict=True)}


def rank(
    space: VectorSpace,
    query: np.ndarray,
    k: int,
    seen: set[int],
    allowed: Callable[[str | None], bool] | None = None,
    diversify: bool = False,
    lam: float = 0.7,
) -> tuple[list[tuple[int, float]], dict[int, int]]:
    """The hot path of a recommendation: unseen top-k (optionally MMR) and their explanations."""
    hits = retrieve(space, query, max(k * 5, 50) if diversify else k, seen, allowed)
    if diversify:
        hits = mmr(space, query, hits, k, lam)
    return hits, explain(space, [h[0] for h in hits], seen)


class Recommender:
    """Similar items and recommendations over one workspace and one embedding model.

    Args:
        workspace: The open ``Workspace``.
        model: Embedding model whose vectors are used; defaults to the workspace setting.
        use_index: Search through the persisted faiss index (kept in step with the database);
            False searches exactly in memory without touching index files.
        log: Where notices (index rebuilt, cold start) are written; None keeps them quiet.
    """

    def __init__(
        self, workspace, model: str | None = None, *, use_index: bool = True, log=sys.stderr
    ) -> None:
        self.workspace = workspace
        self.model = model or workspace.settings.model
        self.use_index = use_index
        self.log = log
        self._space: VectorSpace | None = None
        self._towers: dict[int, VectorSpace] = {}
        self._items: list[tuple[int, str | None, datetime | None]] | None = None
        self._info_cache: dict[int, tuple[str, str | None, str | None]] = {}
        self._popularity: tuple[float, dict[int, float]] | None = None
        self._known = KnownIds()

    # -- vectors and index ------------------------------------------------------------------

    def space(self) -> VectorSpace:
        """The model's vectors (loaded once) with an up-to-date index attached."""
        if self._space is None:
            with self.workspace.session() as session:
                ids, raw = store.load_embeddings(session, self.model)
                labels = dict(session.execute(select(store.Item.id, store.Item.label)).all())
            saved = ItemIndex.load(self.workspace.settings.index_dir, self.model) if self.use_index else None
            if saved is not None and saved.meta.center is not None and len(saved.meta.center) == raw.shape[1]:
                center = np.asarray(saved.meta.center, dtype=np.float32)
            else:
                center = raw.mean(axis=0) if len(raw) else np.zeros(raw.shape[1:], np.float32)
            matrix = center_and_normalise(raw, center) if len(raw) else raw
            self._space = VectorSpace(ids, matrix, [labels.get(int(i)) for i in ids], center, self.model)
            if self.use_index and len(ids):
                self._space.index = self._fresh_index(self._space, saved)
        return self._space

    def tower_space(self, version: int | None = None) -> VectorSpace:
        """Item-tower vectors of a two-tower version (default: the latest) with their own index."""
        from recsys.twotower import TowerServer, latest_version

        if version is None:
            latest = latest_version(self.workspace)
            if latest is None:
                raise RecsysError("no two-tower model yet: run `recsys train`")
            version = latest.version
        if version not in self._towers:
            server = TowerServer(self.workspace, version)
            with self.workspace.session() as session:
                ids, raw = store.load_embeddings(session, server.base_model)
                labels = dict(session.execute(select(store.Item.id, store.Item.label)).all())
            vectors = server.item_vectors(ids, raw)
            space = VectorSpace(
                ids,
                vectors,
                [labels.get(int(i)) for i in ids],
                np.zeros(vectors.shape[1], np.float32),
                server.name,
            )
            space.server, space.raw = server, raw
            if self.use_index and len(ids):
                saved = ItemIndex.load(self.workspace.settings.index_dir, server.name)
                space.index = self._fresh_index(space, saved)
            self._towers[version] = space
        return self._towers[version]

    def strategies(self) -> list[str]:
        """The strategies this workspace can serve now (two-tower once a model is trained)."""
        from recsys.twotower import latest_version

        names = [s for s in STRATEGIES if s != "two-tower"]
        return names + ["two-tower"] if latest_version(self.workspace) is not None else names

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        space = self.space()
        return space.ids, space.matrix

    def _require_space(self) -> VectorSpace:
        space = self.space()
        if len(space.ids) == 0:
            raise RecsysError(
                f"no embeddings for model {self.model} yet: run `recsys embed --model {self.model}`"
            )
        return space

    def _notice(self, message: str) -> None:
        if self.log is not None:
            print(f"note: {message}", file=self.log)

    def _fresh_index(self, space: VectorSpace, index: ItemIndex | None) -> ItemIndex:
        folder = self.workspace.settings.index_dir
        if index is not None and index.meta.center is None:
            index = None
        if index is None:
            self._notice(f"no usable {space.name} index on disk: building one")
            return self.build_index(space=space)
        status = index.status(space.ids, space.name)
        if status.state == "fresh":
            return index
        if status.state == "stale-add":
            rows = space.rows(status.missing_ids)
            index.add(space.ids[rows], space.matrix[rows])
            index.save(folder)
            self._notice(f"index was stale ({status.reason}): added them")
            return index
        self._notice(f"index was stale ({status.reason}): rebuilding")
        return self.build_index(index.meta.factory, space=space)

    def build_index(self, factory: str | None = None, *, space: VectorSpace | None = None) -> ItemIndex:
        """Build and persist the model's index (``factory``: a faiss string or "auto")."""
        settings = self.workspace.settings
        if space is None:  # an explicit rebuild: recompute the centre from today's catalogue
            self._space, use_index, self.use_index = None, self.use_index, False
            space = self._require_space()
            self.use_index = use_index
        index = ItemIndex.build(
            space.ids,
            space.matrix,
            model=space.name,
            factory=factory or settings.index_factory,
            memory_budget_gb=settings.index_memory_gb,
            center=space.center,
        )
        index.save(settings.index_dir)
        space.index = index
        return index

    # -- events and history -----------------------------------------------------------------

    def record(
        self,
        user: str,
        item: str,
        event: str = "view",
        at: str | datetime | None = None,
        weight: float | None = None,
        event_key: str | None = None,
    ) -> RecordReport:
        """Store one event (the user is created on first sight); unknown items raise NotFound."""
        return record(self.workspace, [Event(user, item, event, at, weight, event_key)], known=self._known)

    def remember_item_keys(self) -> None:
        """Look up every item's id once, so recording an event needs no lookup (serving)."""
        with self.workspace.engine.connect() as conn:
            found = dict(conn.execute(select(store.Item.key, store.Item.id)).all())
        self._known.remember(self._known.items, found)

    def user_exists(self, user: str) -> bool:
        user = user_key(user)
        with self.workspace.session() as session:
            return session.scalar(select(store.User.id).where(store.User.key == user)) is not None

    def history(self, user: str, limit: int | None = None) -> list[HistoryEntry]:
        """The user's events, newest first."""
        user = user_key(user)
        with self.workspace.session() as session:
            events = store.user_history(session, user) or []
            events = events[::-1][:limit] if limit else events[::-1]
            info = self._item_info(session, {e[0] for e in events})
        return [
            HistoryEntry(i, info[i][0], ev, ts, info[i][1], info[i][2])
            for i, ev, _, ts in events
            if i in info
        ]

    def profile(self, user: str, half_life_days: float | None = None) -> np.ndarray | None:
        """The user's unit profile vector, or None (unknown user, no history, nothing embedded)."""
        user = user_key(user)
        with self.workspace.session() as session:
            events = store.user_history(session, user)
        return self._profile_from_events(events or [], half_life_days)[0]

    def _profile_from_events(self, events, half_life_days) -> tuple[np.ndarray | None, dict[int, float]]:
        half_life = half_life_days if half_life_days is not None else self.workspace.settings.half_life_days
        weights = history_weights(events, half_life, self.workspace.settings.max_weight)
        if not weights:
            return None, weights
        return space_profile(self._require_space(), weights), weights

    # -- recommendations --------------------------------------------------------------------

    def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        strategy: str = "average",
        diversify: bool = False,
        mmr_lambda: float | None = None,
        labels: Sequence[str] | None = None,
        exclude_labels: Sequence[str] | None = None,
        half_life_days: float | None = None,
        require_user: bool = False,
        model_version: int | None = None,
    ) -> RecommendationList:
        """Top-``k`` unseen items for ``user``, each explained by the history item nearest to it.

        A user with no usable history gets the most popular items (then the newest): the
        ``cold_start`` flag and a note say so.
        """
        user = user_key(user)
        with self.workspace.engine.connect() as conn:
            events = store.user_history(conn, user)
        if events is None and require_user:
            raise NotFound(f"unknown user {user!r}")
        result = self.recommend_for_history(
            events or [],
            k,
            strategy=strategy,
            diversify=diversify,
            mmr_lambda=mmr_lambda,
            labels=labels,
            exclude_labels=exclude_labels,
            half_life_days=half_life_days,
            user=user,
            model_version=model_version,
        )
        result.user = user
        return result

    def recommend_for_history(
        self,
        events: Sequence[tuple[int, str, float | None, datetime]],
        k: int = 10,
        *,
        strategy: str = "average",
        diversify: bool = False,
        mmr_lambda: float | None = None,
        labels: Sequence[str] | None = None,
        exclude_labels: Sequence[str] | None = None,
        half_life_days: float | None = None,
        popularity: dict[int, float] | None = None,
        seed: int | None = None,
        describe: bool = True,
        user: str | None = None,
        model_version: int | None = None,
    ) -> RecommendationList:
        """``recommend`` for a given history of (item id, event, weight, ts), not the stored one.

        The offline evaluation calls this with each user's training events (and the training
        popularity), so held-out events never leak into what it scores. ``describe=False`` skips
        looking up keys and titles (the items then carry ids and scores only).
        """
        if k < 1:
            raise RecsysError(f"k must be at least 1, got {k}")
        if strategy not in STRATEGIES:
            raise RecsysError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        lam = self.workspace.settings.mmr_lambda if mmr_lambda is None else mmr_lambda
        if not 0.0 <= lam <= 1.0:
            raise RecsysError(f"MMR lambda must be between 0 and 1, got {lam}")
        seen = {e[0] for e in events}
        allowed = label_filter(labels, exclude_labels)
        result = RecommendationList(user="", strategy=strategy, items=[], history_size=len(events))
        finish = self._describe if describe else _bare
        if strategy == "random":
            result.items = finish(self._random(k, seen, allowed, seed))
            return result
        query, space = None, None
        if strategy == "average":
            query, _ = self._profile_from_events(events, half_life_days)
            space = self.space() if query is not None else None
        elif strategy == "two-tower" and events:
            space = self.tower_space(model_version)
            rows = space.rows(sorted(seen))
            if len(rows):
                query = space.server.user_vector(user, space.raw[rows])
        if query is None:
            result.cold_start = strategy != "popular"
            if result.cold_start:
                result.notes.append("no usable history yet: showing the most popular items, then the newest")
            result.items = finish(self._popular_hits(k, seen, allowed, popularity))
            return result
        hits, because = rank(space, query, k, seen, allowed, diversify, lam)
        result.items = finish(hits, because=because)
        return result

    def popular(self, k: int = 10, *, exclude: set[int] | None = None, allowed=None) -> list[Recommendation]:
        """Items by total event weight, then newest first: the cold-start list."""
        return self._describe(self._popular_hits(k, exclude or set(), allowed, None))

    #: Seconds a popularity count is reused: a GROUP BY over every event is too dear per request.
    POPULARITY_TTL = 30.0

    def popularity(self) -> dict[int, float]:
        """Total event weight of each item over all stored interactions (at most 30 s old)."""
        import time

        from recsys.interactions import EVENT_WEIGHTS

        if self._popularity is not None and time.monotonic() - self._popularity[0] < self.POPULARITY_TTL:
            return self._popularity[1]
        weight = _event_weight(EVENT_WEIGHTS, self.workspace.settings.max_weight)
        with self.workspace.session() as session:
            rows = session.execute(
                select(store.Interaction.item_id, func.sum(weight)).group_by(store.Interaction.item_id)
            ).all()
        counts = {int(i): float(w) for i, w in rows}
        self._popularity = (time.monotonic(), counts)
        return counts

    def catalogue(self) -> list[tuple[int, str | None, datetime | None]]:
        """(id, label, created) of every item, newest first: loaded once per Recommender."""
        if self._items is None:
            with self.workspace.session() as session:
                rows = session.execute(select(store.Item.id, store.Item.label, store.Item.created_at)).all()
            self._items = sorted(rows, key=lambda r: (r[2] or datetime.min, r[0]), reverse=True)
        return self._items

    def _popular_hits(self, k, exclude, allowed, popularity) -> list[tuple[int, float]]:
        popularity = self.popularity() if popularity is None else popularity
        candidates = [
            r for r in self.catalogue() if r[0] not in exclude and (allowed is None or allowed(r[1]))
        ]
        # stable sort: equal popularity keeps the newest-first order of the catalogue
        ranked = sorted(candidates, key=lambda r: popularity.get(r[0], 0.0), reverse=True)[:k]
        return [(r[0], float(popularity.get(r[0], 0.0))) for r in ranked]

    def _random(self, k, exclude, allowed, seed) -> list[tuple[int, float]]:
        candidates = [
            r[0] for r in self.catalogue() if r[0] not in exclude and (allowed is None or allowed(r[1]))
        ]
        rng = np.random.default_rng(seed)
        picked = (
            rng.choice(len(candidates), size=min(k, len(candidates)), replace=False) if candidates else []
        )
        return [(int(candidates[i]), 0.0) for i in picked]

    # -- similar items ----------------------------------------------------------------------

    def item_vector(self, key: str) -> tuple[int, np.ndarray]:
        space = self._require_space()
        store.check_text(key, "item key", store.KEY_LENGTH)
        with self.workspace.session() as session:
            item_id = session.scalar(select(store.Item.id).where(store.Item.key == key))
        if item_id is None:
            raise NotFound(f"unknown item key {key!r}")
        rows = space.rows([item_id])
        if len(rows) == 0:
            raise RecsysError(f"item {key!r} has no {self.model} embedding yet: run `recsys embed`")
        return item_id, space.matrix[rows[0]]

    def similar(self, item: str | np.ndarray, k: int = 10) -> list[Recommendation]:
        """The ``k`` items nearest to an item key (itself excluded) or to a raw model vector."""
        if k < 1:
            raise RecsysError(f"k must be at least 1, got {k}")
        space = self._require_space()
        exclude: set[int] = set()
        if isinstance(item, str):
            item_id, query = self.item_vector(item)
            exclude.add(item_id)
        else:
            query = np.asarray(item, dtype=np.float32)
            if query.shape != (space.matrix.shape[1],):
                raise RecsysError(
                    f"query vector has shape {query.shape}, expected ({space.matrix.shape[1]},)"
                )
            query = space.transform(query)  # a raw model vector, like those the store keeps
        return self._describe(retrieve(space, query, k, exclude))

    def similar_to_image(
        self, data: bytes, k: int = 10, *, max_pixels: int | None = None
    ) -> list[Recommendation]:
        """Visual search: items nearest to an uploaded or local image (validated like ingest).

        ``max_pixels``: refuse larger pictures (default: the ingest limit; the web uses a lower one).
        """
        from recsys.catalog import BadImage, prepare_image

        settings = self.workspace.settings
        try:
            jpeg = prepare_image(data, settings.max_side, max_pixels or settings.max_pixels)
        except BadImage as exc:
            error = TooLarge if exc.too_large else RecsysError if exc.decodable else NotAnImage
            raise error(str(exc)) from None
        vector = self.workspace.embedder(self.model).embed_bytes(jpeg)
        return self.similar(vector, k)

    def labelled_vectors(self) -> tuple[np.ndarray, list[str]]:
        """Stored (raw) vectors and labels of the labelled embedded items (for knn-accuracy)."""
        with self.workspace.session() as session:
            ids, raw = store.load_embeddings(session, self.model)
            labels = dict(session.execute(select(store.Item.id, store.Item.label)).all())
        if len(ids) == 0:
            self._require_space()
        keep = np.array([labels.get(int(i)) is not None for i in ids], dtype=bool)
        return raw[keep], [labels[int(i)] for i in ids[keep]]

    # -- helpers ----------------------------------------------------------------------------

    def _item_info(self, session, item_ids: set[int]) -> dict[int, tuple[str, str | None, str | None]]:
        """(key, label, title) by id; items are cached per process (they change rarely)."""
        missing = [i for i in item_ids if i not in self._info_cache]
        if missing:
            self._info_cache.update(self._load_item_info(session, set(missing)))
        return {i: self._info_cache[i] for i in item_ids if i in self._info_cache}

    @staticmethod
    def _load_item_info(session, item_ids: set[int]) -> dict[int, tuple[str, str | None, str | None]]:
        info: dict[int, tuple] = {}
        ids = list(item_ids)
        for start in range(0, len(ids), 500):
            rows = session.execute(
                select(store.Item.id, store.Item.key, store.Item.label, store.Item.title).where(
                    store.Item.id.in_(ids[start : start + 500])
                )
            )
            info.update({r[0]: (r[1], r[2], r[3]) for r in rows})
        return info

    def _describe(
        self, hits: list[tuple[int, float]], because: dict[int, int] | None = None
    ) -> list[Recommendation]:
        if not hits:
            return []
        because = because or {}
        with self.workspace.session() as session:
            info = self._item_info(session, {i for i, _ in hits} | set(because.values()))
        return [
            Recommendation(
                item_id=i,
                key=info[i][0],
                score=s,
                label=info[i][1],
                title=info[i][2],
                because=info[because[i]][0] if i in because and because[i] in info else None,
            )
            for i, s in hits
            if i in info
        ]


def _bare(hits: list[tuple[int, float]], because: dict[int, int] | None = None) -> list[Recommendation]:
    return [Recommendation(item_id=i, key="", score=s) for i, s in hits]


def _event_weight(weights: dict[str, float], max_weight: float):
    """SQL for an event's weight: its own, clipped to [0, max_weight], else its type's default."""
    from sqlalchemy import case

    own = store.Interaction.weight
    clipped = case((own > max_weight, max_weight), (own < 0, 0.0), else_=own)
    by_type = case(*((store.Interaction.event == name, w) for name, w in weights.items()), else_=1.0)
    return func.coalesce(clipped, by_type)
