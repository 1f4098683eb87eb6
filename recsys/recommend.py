"""The one API the CLI, the web page and the evaluation share: ``Recommender``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sqlalchemy import select

from recsys import store
from recsys.errors import NotFound, RecsysError
from recsys.index import exact_search


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
        return asdict(self)


class Recommender:
    """Similar items and recommendations over one workspace and one embedding model.

    Args:
        workspace: The open ``Workspace``.
        model: Embedding model whose vectors are used; defaults to the workspace setting.
    """

    def __init__(self, workspace, model: str | None = None) -> None:
        self.workspace = workspace
        self.model = model or workspace.settings.model
        self._ids: np.ndarray | None = None
        self._matrix: np.ndarray | None = None

    # -- vectors ----------------------------------------------------------------------------

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, unit vectors) of every embedded item, loaded once."""
        if self._ids is None:
            with self.workspace.session() as session:
                self._ids, self._matrix = store.load_embeddings(session, self.model)
        return self._ids, self._matrix

    def _require_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids, matrix = self.vectors()
        if len(ids) == 0:
            raise RecsysError(
                f"no embeddings for model {self.model} yet: run `recsys embed --model {self.model}`"
            )
        return ids, matrix

    def item_vector(self, key: str) -> tuple[int, np.ndarray]:
        ids, matrix = self._require_vectors()
        with self.workspace.session() as session:
            item_id = session.scalar(select(store.Item.id).where(store.Item.key == key))
        if item_id is None:
            raise NotFound(f"unknown item key {key!r}")
        row = np.searchsorted(ids, item_id)
        if row >= len(ids) or ids[row] != item_id:
            raise RecsysError(f"item {key!r} has no {self.model} embedding yet: run `recsys embed`")
        return item_id, matrix[row]

    # -- queries ----------------------------------------------------------------------------

    def similar(self, item: str | np.ndarray, k: int = 10) -> list[Recommendation]:
        """The ``k`` items nearest to an item key (itself excluded) or to a query vector."""
        if k < 1:
            raise RecsysError(f"k must be at least 1, got {k}")
        ids, matrix = self._require_vectors()
        exclude: set[int] = set()
        if isinstance(item, str):
            item_id, query = self.item_vector(item)
            exclude.add(item_id)
        else:
            query = np.asarray(item, dtype=np.float32)
            if query.shape != (matrix.shape[1],):
                raise RecsysError(f"query vector has shape {query.shape}, expected ({matrix.shape[1]},)")
        scores, rows = exact_search(matrix, query, k + len(exclude))
        hits = [
            (int(ids[r]), float(s))
            for s, r in zip(scores[0], rows[0], strict=True)
            if r >= 0 and int(ids[r]) not in exclude
        ][:k]
        return self._describe(hits)

    def similar_to_image(self, data: bytes, k: int = 10) -> list[Recommendation]:
        """Visual search: items nearest to an uploaded or local image (validated like ingest)."""
        from recsys.catalog import BadImage, prepare_image

        settings = self.workspace.settings
        try:
            jpeg = prepare_image(data, settings.max_side, settings.max_pixels)
        except BadImage as exc:
            raise RecsysError(str(exc)) from None
        vector = self.workspace.embedder(self.model).embed_bytes(jpeg)
        return self.similar(vector, k)

    # -- helpers ----------------------------------------------------------------------------

    def _describe(self, hits: list[tuple[int, float]]) -> list[Recommendation]:
        if not hits:
            return []
        with self.workspace.session() as session:
            rows = session.execute(
                select(store.Item.id, store.Item.key, store.Item.label, store.Item.title).where(
                    store.Item.id.in_([i for i, _ in hits])
                )
            ).all()
        info = {r[0]: r for r in rows}
        return [
            Recommendation(item_id=i, key=info[i][1], score=s, label=info[i][2], title=info[i][3])
            for i, s in hits
            if i in info
        ]

    def labelled_vectors(self) -> tuple[np.ndarray, list[str]]:
        """Vectors and labels of the embedded items that have a label (for knn-accuracy)."""
        ids, matrix = self._require_vectors()
        with self.workspace.session() as session:
            labels = dict(
                session.execute(
                    select(store.Item.id, store.Item.label).where(store.Item.label.is_not(None))
                ).all()
            )
        keep = np.array([int(i) in labels for i in ids], dtype=bool)
        return matrix[keep], [labels[int(i)] for i in ids[keep]]
