"""The model's vectors as serving holds them: loaded once, centred, with an index kept fresh."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from sqlalchemy import func, select

from recsys import store
from recsys.errors import RecsysError
from recsys.index import ItemIndex
from recsys.space import VectorSpace, center_and_normalise

#: Seconds the loaded vectors are trusted before the store is asked whether it holds others.
RECHECK_SECONDS = 30.0


class Vectors:
    """One embedding model's vector space over a workspace, and its faiss index.

    Args:
        workspace: The open workspace.
        model: The embedding model whose vectors are served.
        use_index: Search through the persisted faiss index (kept in step with the database);
            False searches exactly in memory without touching index files.
        notice: Where notes go (index rebuilt); None keeps them quiet.
    """

    def __init__(
        self, workspace, model: str, *, use_index: bool = True, notice: Callable[[str], None] | None = None
    ) -> None:
        self.workspace = workspace
        self.model = model
        self.use_index = use_index
        self.notice = notice or (lambda _: None)
        self._space: VectorSpace | None = None
        self._loading = threading.Lock()
        self._checked = 0.0

    @property
    def loaded(self) -> bool:
        return self._space is not None

    def space(self) -> VectorSpace:
        """The model's vectors (loaded once; concurrent first callers wait for one load) with an
        up-to-date index attached; looked at again every ``RECHECK_SECONDS`` (``refresh``)."""
        if self._space is None or time.monotonic() > self._checked + RECHECK_SECONDS:
            self.refresh(stale_only=True)
        return self._space

    def refresh(self, *, stale_only: bool = False) -> bool:
        """Load the vectors again if the store holds another number of them (items embedded, or
        removed, since they were loaded: a running server then serves them); True if it did.
        ``stale_only``: unless another thread looked within ``RECHECK_SECONDS``."""
        with self._loading:
            if stale_only and self._space is not None and time.monotonic() <= self._checked + RECHECK_SECONDS:
                return False
            if self._space is not None and self._stored() == len(self._space.ids):
                self._checked = time.monotonic()
                return False
            self._space = self._load(self.use_index)
            self._checked = time.monotonic()
            return True

    def _stored(self) -> int:
        e = store.Embedding
        with self.workspace.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(e).where(e.model == self.model)).scalar_one()

    def require(self) -> VectorSpace:
        """``space()``, or a one-line error when the model has no vectors yet."""
        space = self.space()
        if len(space.ids) == 0:
            raise RecsysError(
                f"no embeddings for model {self.model} in workspace {self.workspace.home} yet: run "
                f"`recsys embed --model {self.model}`, or point --home (RECSYS_HOME) at another workspace"
            )
        return space

    def _load(self, use_index: bool) -> VectorSpace:
        with self.workspace.session() as session:
            ids, raw = store.load_embeddings(session, self.model)
            labels = dict(session.execute(select(store.Item.id, store.Item.label)).all())
        saved = ItemIndex.load(self.workspace.settings.index_dir, self.model) if use_index else None
        if saved is not None and saved.meta.center is not None and len(saved.meta.center) == raw.shape[1]:
            center = np.asarray(saved.meta.center, dtype=np.float32)
        else:
            center = raw.mean(axis=0) if len(raw) else np.zeros(raw.shape[1:], np.float32)
        matrix = center_and_normalise(raw, center) if len(raw) else raw
        space = VectorSpace(ids, matrix, [labels.get(int(i)) for i in ids], center, self.model)
        if use_index and len(ids):
            space.index = self.fresh_index(space, saved)
        return space

    def attach_index(self, space: VectorSpace) -> None:
        """Give a space of a strategy's own (a tower's items) its up-to-date saved index."""
        space.index = self.fresh_index(space, ItemIndex.load(self.workspace.settings.index_dir, space.name))

    def fresh_index(self, space: VectorSpace, index: ItemIndex | None) -> ItemIndex:
        """``index`` brought in step with ``space``: used as it is, topped up, or rebuilt."""
        if index is not None and index.meta.center is None:
            index = None
        if index is None:
            self.notice(f"no usable {space.name} index on disk: building one")
            return self.build_index(space=space)
        status = index.status(space.ids, space.name)
        if status.state == "fresh":
            return index
        if status.state == "stale-add":
            rows = space.rows(status.missing_ids)
            index.add(space.ids[rows], space.matrix[rows])
            index.save(self.workspace.settings.index_dir)
            self.notice(f"index was stale ({status.reason}): added them")
            return index
        self.notice(f"index was stale ({status.reason}): rebuilding")
        return self.build_index(index.meta.factory, space=space)

    def build_index(self, factory: str | None = None, *, space: VectorSpace | None = None) -> ItemIndex:
        """Build and persist an index (``factory``: a faiss string or "auto"); with no ``space``, the
        model's own, its centre computed anew from today's catalogue."""
        settings = self.workspace.settings
        if space is None:
            self._space = self._load(use_index=False)
            space = self.require()
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

    def labelled(self) -> tuple[np.ndarray, list[str]]:
        """Stored (raw) vectors and labels of the labelled embedded items (for knn-accuracy)."""
        with self.workspace.session() as session:
            ids, raw = store.load_embeddings(session, self.model)
            labels = dict(session.execute(select(store.Item.id, store.Item.label)).all())
        if len(ids) == 0:
            self.require()  # the one-line error
        keep = np.array([labels.get(int(i)) is not None for i in ids], dtype=bool)
        return raw[keep], [labels[int(i)] for i in ids[keep]]
