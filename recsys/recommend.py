"""The one API the CLI, the web page and the evaluation share: ``Recommender``.

rec = Recommender(workspace)
rec.record("ana", "tulip/123")                 # same path as `recsys record` and the web
rec.recommend("ana", k=10)                     # profile -> faiss -> unseen items, explained
rec.similar("tulip/123", k=10)                 # item-to-item

A facade: it holds no logic of its own beyond putting the serving parts together (``serving/``:
vectors and their index, the one ranking path, strategy selection, item descriptions).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from recsys import store, strategies
from recsys.errors import NotFound, RecsysError
from recsys.events import History, strongest_events
from recsys.impressions import ImpressionLog, Shown, new_request_id
from recsys.interactions import KnownIds, NewEvent, RecordReport, record, record_in_chunks
from recsys.keys import item_key, user_key
from recsys.serving import ranking
from recsys.serving.items import Descriptions, check_labels, load_catalogue
from recsys.serving.results import HistoryEntry, Recommendation, RecommendationList
from recsys.serving.selection import STRATEGIES, Selection
from recsys.serving.vectors import Vectors
from recsys.space import VectorSpace, label_filter, retrieve
from recsys.strategies import Catalogue, Context, Strategy

__all__ = ["STRATEGIES", "HistoryEntry", "Recommendation", "RecommendationList", "Recommender"]


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
        self.model = model or workspace.settings.model
        self.log = log
        on = workspace.settings.log_impressions
        self.impressions = (impressions or ImpressionLog(workspace)) if on else None
        self.vectors = Vectors(workspace, self.model, use_index=use_index, notice=self._notice)
        self.descriptions = Descriptions(workspace)
        self.selection = Selection(workspace, self.context)
        self._catalogue: Catalogue | None = None
        self.known = KnownIds()

    def _notice(self, message: str) -> None:
        if self.log is not None:
            print(f"note: {message}", file=self.log)

    # -- what strategies work with ---------------------------------------------------------------

    def space(self) -> VectorSpace:
        """The model's vectors (loaded once) with an up-to-date index attached."""
        return self.vectors.space()

    def catalogue(self) -> Catalogue:
        """Every item's id (ascending), label and newness: loaded once per Recommender."""
        if self._catalogue is None:
            self._catalogue = load_catalogue(self.workspace)
        return self._catalogue

    def context(self) -> Context:
        """What strategies get to work with (they never see this class)."""
        v = self.vectors
        return Context(
            self.workspace,
            self.catalogue(),
            v.require,
            v.attach_index if v.use_index else None,
            self._notice if self.log is not None else None,
        )

    # -- strategies ------------------------------------------------------------------------------

    def strategies(self) -> list[str]:
        """What this workspace can serve now: "auto", then every strategy whose model exists."""
        return self.selection.available()

    def strategy(self, name: str = "auto", version: int | None = None) -> Strategy:
        """The strategy ready to serve (``auto``: the evaluated best), reused for 30 s."""
        return self.selection.strategy(name, version)

    def fitted(self, name: str, train, **params) -> Strategy:
        """A strategy fitted on ``train`` (user -> events), hyper-parameters chosen on them."""
        return strategies.get(name)(self.context(), dict(params)).fit(train)

    # -- events and history ----------------------------------------------------------------------

    def record(
        self,
        user: str,
        item: str,
        event: str = "view",
        at: str | datetime | None = None,
        weight: float | None = None,
        event_key: str | None = None,
        request_id: str | None = None,
        origin: str | None = None,
    ) -> RecordReport:
        """Store one event (the user is created on first sight); unknown items raise NotFound.

        ``request_id``: the served list the event came from (attributes a click to it); ``origin``:
        a page visitor's network, hashed (``NewEvent``)."""
        event_ = NewEvent(user, item, event, at, weight, event_key, request_id, origin)
        return record(self.workspace, [event_], known=self.known)

    def record_many(self, events: Sequence[NewEvent]) -> RecordReport:
        """Store a batch (a site's back end forwarding its events): each event stands on its own,
        ``outcomes`` says what became of each, one transaction per chunk."""
        return record_in_chunks(self.workspace, events, known=self.known)

    def remember_items(self) -> None:
        """Look up every item's id, key, label and title once (serving): recording an event then
        needs no lookup, and describing a list no query. Items added later are looked up when
        first needed."""
        if not self.descriptions.complete:
            self.known.remember(self.known.items, self.descriptions.remember_all())

    def history(self, user: str, limit: int | None = None) -> list[HistoryEntry]:
        """The user's events, newest first."""
        with self.workspace.engine.connect() as conn:
            events = store.user_history(conn, user_key(user), limit) or []
        return self.descriptions.entries(events[::-1])

    # -- recommendations -------------------------------------------------------------------------

    def recommend(
        self, user: str, k: int = 10, *, require_user: bool = False, **options
    ) -> RecommendationList:
        """Top-``k`` unseen items for ``user``, each explained by the history item nearest to it
        (``options``: those of ``recommend_for_history``).

        A user with no usable history gets the most popular items (then the newest): the
        ``cold_start`` flag and a note say so.
        """
        user = user_key(user)
        with self.workspace.engine.connect() as conn:
            events = store.user_history(conn, user, limit=self.workspace.settings.history_limit)
        if events is None and require_user:
            raise NotFound(f"unknown user {user!r}")
        result = self.recommend_for_history(events or [], k, user=user, log_impressions=True, **options)
        result.user = user
        return result

    def recommend_for_history(
        self,
        events: History,
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
        choice = self.selection.choose(strategy, user, model_version, half_life_days)
        served, experiment = choice.served, choice.experiment
        result = RecommendationList(
            "",
            served.name,
            [],
            history_size=len(events),
            requested=strategy,
            request_id=new_request_id(),
            experiment=experiment.name if experiment is not None else None,
            arm=choice.arm,
            notes=[choice.note] if choice.note else [],
        )
        if labels:
            check_labels(self.catalogue(), labels)
        allowed = label_filter(labels, exclude_labels)
        ranked = self.rank(served, [events], [user], k, allowed=allowed, diversify=diversify, lam=lam)
        hits, because = ranked[0]
        if hits is None:
            if served.name != "popular":
                result.cold_start = True
                result.notes.insert(
                    0, "no usable history yet: showing the most popular items, then the newest"
                )
            hits, because = self.rank(self.strategy("popular"), [events], [user], k, allowed=allowed)[0]
        if describe:
            result.items = self.descriptions.describe(hits or [], because, strongest_events(events))
        else:
            result.items = [Recommendation(item_id=i, key="", score=s) for i, s in hits or []]
        if log_impressions and self.impressions is not None and result.items:
            shown_by = "popular" if result.cold_start else result.strategy
            ids = [r.item_id for r in result.items]
            shown = Shown(
                result.request_id, user, ids, shown_by, result.experiment, choice.arm, store.utcnow()
            )
            result.request_id = self.impressions.log(shown)  # a repeat keeps the first showing's id
        return result

    def rank(
        self, served: Strategy, histories: Sequence[History], users: Sequence[str | None], k: int, **options
    ) -> list[ranking.Ranked]:
        """``serving.ranking.rank`` over this workspace's catalogue and image space."""
        limit = self.workspace.settings.history_limit
        return ranking.rank(
            served,
            histories,
            users,
            k,
            catalogue=self.catalogue(),
            image_space=self.space,
            history_limit=limit,
            **options,
        )

    def popular(self, k: int = 10) -> list[Recommendation]:
        """Items by total event weight, then newest first: the cold-start list."""
        hits, _ = self.rank(self.strategy("popular"), [[]], [None], k)[0]
        return self.descriptions.describe(hits or [])

    # -- similar items ---------------------------------------------------------------------------

    def item_vector(self, key: str) -> tuple[int, np.ndarray]:
        space = self.vectors.require()
        key = item_key(key)
        with self.workspace.session() as session:
            item_id = store.item_ids(session, [key]).get(key)
        if item_id is None:
            raise NotFound(f"unknown item key {key!r}")
        rows = space.rows([item_id])
        if len(rows) == 0 and self.vectors.refresh():  # embedded since the vectors were loaded?
            space = self.vectors.require()
            rows = space.rows([item_id])
        if len(rows) == 0:
            raise RecsysError(f"item {key!r} has no {self.model} embedding yet: run `recsys embed`")
        return item_id, space.matrix[rows[0]]

    def similar(self, item: str | np.ndarray, k: int = 10) -> list[Recommendation]:
        """The ``k`` items nearest to an item key (itself excluded) or to a raw model vector."""
        if k < 1:
            raise RecsysError(f"k must be at least 1, got {k}")
        space = self.vectors.require()
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
        return self.descriptions.describe(retrieve(space, query, k, exclude))

    def similar_to_image(
        self, data: bytes, k: int = 10, *, max_pixels: int | None = None
    ) -> list[Recommendation]:
        """Visual search: items nearest to an uploaded or local image (validated like ingest).

        ``max_pixels``: refuse larger pictures (default: the ingest limit; the web uses a lower one).
        """
        from recsys.catalog import prepare_query

        settings = self.workspace.settings
        jpeg = prepare_query(data, settings.max_side, max_pixels or settings.max_pixels)
        return self.similar(self.workspace.embedder(self.model).embed_bytes(jpeg), k)
