"""The one API the CLI, the web page and the evaluation share: ``Recommender``.

rec = Recommender(workspace)
rec.record("ana", "tulip/123")                 # same path as `recsys record` and the web
rec.recommend("ana", k=10)                     # profile -> faiss -> unseen items, explained
rec.similar("tulip/123", k=10)                 # item-to-item
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import select

from recsys import experiments, registry, store, strategies
from recsys.errors import NotAnImage, NotFound, RecsysError, TooLarge
from recsys.impressions import ImpressionLog, Shown, new_request_id
from recsys.index import ItemIndex
from recsys.interactions import Event, KnownIds, RecordReport, record, user_key
from recsys.space import VectorSpace, center_and_normalise, explain, label_filter, mmr, retrieve
from recsys.strategies import Catalogue, Context, Queries, Strategy
from recsys.strategies.base import top_k_rows

#: What a caller may ask for: every registered strategy, and "auto" (the evaluated best).
STRATEGIES = ("auto", *strategies.REGISTRY)
#: Seconds a served strategy (and the auto choice) is reused before the registry is asked again.
SERVING_TTL = 30.0
#: Seconds the running experiment is reused before the database is asked again.
EXPERIMENT_TTL = 5.0


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
    requested: str = ""  # what was asked for ("auto" names the strategy it chose)
    request_id: str = ""  # sent back with a click, it ties the click to this list
    experiment: str | None = None  # the running experiment whose arm ranked the list
    arm: str | None = None

    def as_dict(self) -> dict:
        return {
            "user": self.user,
            "request_id": self.request_id,
            "strategy": self.strategy,
            "requested": self.requested or self.strategy,
            "experiment": self.experiment,
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


class Recommender:
    """Similar items and recommendations over one workspace and one embedding model.

    Args:
        workspace: The open ``Workspace``.
        model: Embedding model whose vectors are used; defaults to the workspace setting.
        use_index: Search through the persisted faiss index (kept in step with the database);
            False searches exactly in memory without touching index files.
        log: Where notices (index rebuilt, cold start) are written; None keeps them quiet.
        impressions: Where served lists are logged; default: written at once when the
            ``log_impressions`` setting is on (the web server passes a batching one).
    """

    def __init__(
        self,
        workspace,
        model: str | None = None,
        *,
        use_index: bool = True,
        log=sys.stderr,
        impressions: ImpressionLog | None = None,
    ) -> None:
        self.workspace = workspace
        if impressions is None and workspace.settings.log_impressions:
            impressions = ImpressionLog(workspace)
        self.impressions = impressions if workspace.settings.log_impressions else None
        self._experiment: tuple[float, experiments.Experiment | None] | None = None
        self.model = model or workspace.settings.model
        self.use_index = use_index
        self.log = log
        self._space: VectorSpace | None = None
        self._catalogue: Catalogue | None = None
        self._serving: dict[tuple[str, int | None], tuple[float, Strategy]] = {}
        self._auto: tuple[float, dict] | None = None
        self._info_cache: dict[int, tuple[str, str | None, str | None]] = {}
        self._remembered = False
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

    def catalogue(self) -> Catalogue:
        """Every item's id (ascending), label and newness: loaded once per Recommender."""
        if self._catalogue is None:
            with self.workspace.session() as session:
                rows = session.execute(
                    select(store.Item.id, store.Item.label, store.Item.created_at).order_by(store.Item.id)
                ).all()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            order = sorted(range(len(rows)), key=lambda n: (rows[n][2] or datetime.min, rows[n][0]))
            newness = np.zeros(len(rows))
            newness[order] = np.arange(len(rows)) / max(len(rows) - 1, 1)
            self._catalogue = Catalogue(ids, np.array([r[1] for r in rows], dtype=object), newness)
        return self._catalogue

    def context(self) -> Context:
        """What strategies get to work with (they never see this class)."""
        return Context(
            self.workspace,
            self.catalogue(),
            self._require_space,
            self._attach_index if self.use_index else None,
            (lambda m: self._notice(m)) if self.log is not None else None,
        )

    def _attach_index(self, space: VectorSpace) -> None:
        space.index = self._fresh_index(space, ItemIndex.load(self.workspace.settings.index_dir, space.name))

    # -- strategies ---------------------------------------------------------------------------

    def strategies(self) -> list[str]:
        """What this workspace can serve now: "auto", then every strategy whose model exists."""
        names = ["auto"]
        for name, cls in strategies.REGISTRY.items():
            if not cls.needs_model or registry.latest(self.workspace, name) is not None:
                names.append(name)
        return names

    def strategy(self, name: str = "auto", version: int | None = None) -> Strategy:
        """The strategy ready to serve (``auto``: the evaluated best), reused for 30 s."""
        if name == "auto":  # the evaluated strategy, and the very version evaluated where it has one
            choice = self.auto_choice()
            name, version = choice["strategy"], choice.get("version")
        cls = strategies.get(name)
        key = (name, version)
        cached = self._serving.get(key)
        if cached is not None and time.monotonic() - cached[0] < SERVING_TTL:
            return cached[1]
        if cls.needs_model and version is None and cached is not None:
            latest = registry.latest(self.workspace, name)
            if latest is not None and latest.version == cached[1].params.get("version"):
                self._serving[key] = (time.monotonic(), cached[1])  # still the newest version
                return cached[1]
        params = {} if version is None else {"version": version}
        served = cls(self.context(), params).fit_serving()
        self._serving[key] = (time.monotonic(), served)
        return served

    def fitted(self, name: str, train: dict, **params) -> Strategy:
        """A strategy fitted on ``train`` (the evaluation's); two-tower loads its trained version."""
        return strategies.get(name)(self.context(), dict(params)).fit(train)

    def auto_choice(self) -> dict:
        """{"strategy", "recall@10", "evaluation", "reason"}: what ``auto`` serves, and why.

        The strategy with the best recall@10 in the latest temporal evaluation that can be served
        now (a strategy that needs a model has one; an evaluated two-tower version still exists);
        ``average`` when there is none.
        """
        if self._auto is not None and time.monotonic() - self._auto[0] < SERVING_TTL:
            return self._auto[1]
        from recsys.evaluate import latest_evaluations

        choice = {"strategy": "average", "recall@10": None, "evaluation": None, "reason": "no evaluation yet"}
        for evaluation in latest_evaluations(self.workspace, split="temporal"):
            rows = [r for r in evaluation.strategies if self._servable(r)]
            if rows:
                best = max(rows, key=lambda r: r["recall@10"])
                choice = {
                    "strategy": best["strategy"],
                    "version": best.get("version"),
                    "recall@10": best["recall@10"],
                    "evaluation": evaluation.id,
                    "reason": f"best recall@10 in evaluation {evaluation.id}",
                }
                break
        self._auto = (time.monotonic(), choice)
        return choice

    def _servable(self, row: dict) -> bool:
        cls = strategies.REGISTRY.get(row["strategy"])
        if cls is None:
            return False
        if row.get("version") is not None and not registry.exists(self.workspace, cls.name, row["version"]):
            return False
        return not cls.needs_model or registry.latest(self.workspace, cls.name) is not None

    def experiment(self) -> experiments.Experiment | None:
        """The running experiment, if any (asked again after 5 s: a stop takes effect that fast)."""
        if self._experiment is None or time.monotonic() - self._experiment[0] > EXPERIMENT_TTL:
            self._experiment = (time.monotonic(), experiments.running(self.workspace))
        return self._experiment[1]

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
        request_id: str | None = None,
    ) -> RecordReport:
        """Store one event (the user is created on first sight); unknown items raise NotFound.

        ``request_id``: the served list the event came from (attributes a click to it)."""
        event_ = Event(user, item, event, at, weight, event_key, request_id)
        return record(self.workspace, [event_], known=self._known)

    def remember_items(self) -> None:
        """Look up every item's id, key, label and title once (serving): recording an event then
        needs no lookup, and describing a list no query (at 100,000 items most lists had an item
        not described yet, and its ORM query was 8% of a worker's time).

        Once per Recommender: a forked worker inherits what its parent remembered (0.4 s per
        worker at 100,000 items), and items added later are looked up when first needed."""
        if self._remembered:
            return
        with self.workspace.engine.connect() as conn:
            rows = conn.execute(
                select(store.Item.id, store.Item.key, store.Item.label, store.Item.title)
            ).all()
        self._known.remember(self._known.items, {r[1]: r[0] for r in rows})
        self._info_cache.update({r[0]: (r[1], r[2], r[3]) for r in rows})
        self._remembered = True

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

    # -- recommendations --------------------------------------------------------------------

    def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        strategy: str = "auto",
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
            log_impressions=True,
        )
        result.user = user
        return result

    def recommend_for_history(
        self,
        events: Sequence[tuple[int, str, float | None, datetime]],
        k: int = 10,
        *,
        strategy: str = "auto",
        diversify: bool = False,
        mmr_lambda: float | None = None,
        labels: Sequence[str] | None = None,
        exclude_labels: Sequence[str] | None = None,
        half_life_days: float | None = None,
        describe: bool = True,
        user: str | None = None,
        model_version: int | None = None,
        log_impressions: bool = False,
    ) -> RecommendationList:
        """``recommend`` for a given history of (item id, event, weight, ts), not the stored one.

        ``auto`` serves the user's arm while an experiment runs. ``log_impressions``: log the list
        as shown (serving; ``recommend`` does), under its ``request_id``.
        """
        if k < 1:
            raise RecsysError(f"k must be at least 1, got {k}")
        if strategy != "auto":
            strategies.get(strategy)  # one line naming an unknown strategy
        lam = self.workspace.settings.mmr_lambda if mmr_lambda is None else mmr_lambda
        if not 0.0 <= lam <= 1.0:
            raise RecsysError(f"MMR lambda must be between 0 and 1, got {lam}")
        experiment = self.experiment() if strategy == "auto" and user is not None else None
        arm = experiment.arm(user) if experiment is not None else None
        served = self.strategy(arm or strategy, model_version if arm is None else None)
        if half_life_days is not None and served.name == "average":  # a profile with its own half-life
            served = strategies.get("average")(self.context(), {"half_life_days": half_life_days})
        allowed = label_filter(labels, exclude_labels)
        result = RecommendationList(
            user="",
            strategy=served.name,
            items=[],
            history_size=len(events),
            requested=strategy,
            request_id=new_request_id(),
            experiment=experiment.name if experiment is not None else None,
            arm=arm,
        )
        if arm is not None:
            result.notes.append(f"auto serves {arm}: this user's arm of experiment {experiment.name}")
        elif strategy == "auto":
            choice = self.auto_choice()
            result.notes.append(
                f"auto serves {choice['strategy']}: {choice['reason']}"
                + (f", recall@10 {choice['recall@10']:.4f}" if choice["recall@10"] is not None else "")
            )
        hits, because = self.rank(served, [events], [user], k, allowed=allowed, diversify=diversify, lam=lam)[
            0
        ]
        if hits is None:
            if served.name != "popular":
                result.cold_start = True
                note = "no usable history yet: showing the most popular items, then the newest"
                result.notes.insert(0, note)
            hits, because = self.rank(self.strategy("popular"), [events], [user], k, allowed=allowed)[0]
        result.items = (self._describe if describe else _bare)(hits or [], because=because)
        if log_impressions and self.impressions is not None and result.items:
            self.impressions.log(
                Shown(
                    result.request_id,
                    user,
                    [r.item_id for r in result.items],
                    "popular" if result.cold_start else result.strategy,
                    result.experiment,
                    arm,
                    store.utcnow(),
                )
            )
        return result

    def rank(
        self,
        served: Strategy,
        histories: Sequence[Sequence[tuple]],
        users: Sequence[str | None],
        k: int,
        *,
        allowed: Callable[[str | None], bool] | None = None,
        diversify: bool = False,
        lam: float = 0.7,
        candidates: np.ndarray | None = None,
        explain_hits: bool = True,
    ) -> list[tuple[list[tuple[int, float]] | None, dict[int, int]]]:
        """Per history: its top-``k`` unseen (item id, score) and explanations, or (None, {}) when
        the strategy cannot score it. Whatever the strategy, the same exclusions (what was seen),
        label filters, MMR and "because you viewed" apply. ``candidates``: rank only these ids."""
        scores = served.score(histories, users)
        out: list[tuple[list[tuple[int, float]] | None, dict[int, int]]] = []
        fetch = max(k * 5, 50) if diversify else k
        if isinstance(scores, Queries):
            space = scores.space
            exact = None
            if space.index is None or candidates is not None:  # evaluation: one product for the batch
                exact = _top_dense(
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
                hits = (
                    exact[n]
                    if exact is not None
                    else retrieve(space, scores.vectors[n], fetch, seen, allowed)
                )
                if diversify:
                    hits = mmr(space, scores.vectors[n], hits, k, lam)
                out.append((hits, explain(space, [h[0] for h in hits], seen) if explain_hits else {}))
            return out
        catalogue = self.catalogue()
        tops = _top_dense(
            scores.scores, catalogue.ids, catalogue.labels, histories, fetch, allowed, candidates
        )
        image = self.space() if (diversify or (explain_hits and served.explains)) else None
        for n, history in enumerate(histories):
            if not scores.valid[n]:
                out.append((None, {}))
                continue
            hits = tops[n]
            if diversify and hits:
                top, bottom = hits[0][1], hits[-1][1]
                scaled = [(i, (s - bottom) / (top - bottom) if top > bottom else 1.0) for i, s in hits]
                order = {i: s for i, s in hits}
                hits = [(i, order[i]) for i, _ in mmr(image, None, scaled, k, lam)]
            seen = {e[0] for e in history}
            because = explain(image, [h[0] for h in hits], seen) if explain_hits and served.explains else {}
            out.append((hits, because))
        return out

    def popular(self, k: int = 10) -> list[Recommendation]:
        """Items by total event weight, then newest first: the cold-start list."""
        hits, _ = self.rank(self.strategy("popular"), [[]], [None], k)[0]
        return self._describe(hits or [])

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


def _top_dense(
    scores: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    histories: Sequence[Sequence[tuple]],
    k: int,
    allowed: Callable[[str | None], bool] | None,
    candidates: np.ndarray | None,
) -> list[list[tuple[int, float]]]:
    """Per row of ``scores`` (over ``ids``; one shared row is broadcast): the ``k`` best unseen
    (id, score), best first, within ``candidates`` and the label filter."""
    base = np.zeros(len(ids), dtype=bool)  # True = never rank
    if allowed is not None:
        base |= ~np.array([bool(allowed(label)) for label in labels], dtype=bool)
    if candidates is not None:
        base |= ~np.isin(ids, candidates)
    seen = []  # what each history holds is never ranked
    for history in histories:
        held = np.fromiter({e[0] for e in history}, dtype=np.int64)
        pos = np.minimum(np.searchsorted(ids, held), max(len(ids) - 1, 0))
        seen.append(pos[ids[pos] == held] if len(ids) else pos[:0])
    tops = top_k_rows(scores, seen, k, base)
    rows = (scores[0 if scores.shape[0] == 1 else n] for n in range(len(tops)))
    return [
        list(zip(ids[top].tolist(), np.asarray(row, np.float64)[top].tolist(), strict=True))
        for row, top in zip(rows, tops, strict=True)
    ]
