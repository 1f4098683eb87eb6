"""Nearest-neighbour search over item vectors with faiss (inner product = cosine on unit vectors).

Public surface: ``exact_search`` (one-off exact queries), ``ItemIndex`` (a persisted faiss index
keyed by item id), ``choose_factory`` (the ``--index auto`` rule) and ``IndexStatus``.

An ``ItemIndex`` is saved as ``<model>.faiss`` plus ``<model>.json`` (model, factory, item count,
id map digest, build time, search parameters), each written to a temporary file and renamed, so a
crash never leaves a half-written index. Before use it is compared with the database: an index
that lacks some items gets them added (``add_with_ids``); one that holds items no longer embedded,
or was built for another model, is rebuilt, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recsys import atomic
from recsys import ids as id_lookup
from recsys.errors import RecsysError

EXACT_BELOW = 2_000
#: Links per HNSW node; each costs 2 x 4 bytes per layer-0 neighbour list beside the vector.
HNSW_M = 32
#: Dimensions the HNSW graph of ``auto`` works in (exact re-scoring restores the order).
PCA_DIM = 256


def exact_search(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of the ``k`` best rows of ``matrix`` per query, best first.

    A matrix product and a partial sort: no index is built, nothing is copied.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(int(k), len(matrix))
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    scores = queries @ matrix.T
    top = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < len(matrix)
        else np.tile(np.arange(k), (len(queries), 1))
    )
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1).astype(
        np.int64
    )


def choose_factory(n: int, dim: int, memory_budget_gb: float = 4.0) -> str:
    """Pick an index type from the catalogue size and a memory budget, as autofaiss does.

    Measured on 2 cores with real embeddings (``bench/recommend_latency.py``, one query at a
    time): below ``EXACT_BELOW`` items exact search costs about what a graph does (0.23 vs 0.14 ms
    at 1,000) and needs no build; from there HNSW32 wins and its recall stays 1.0 (10,000 items:
    Flat 3.8 ms, HNSW32 0.47 ms; 100,000: HNSW32 ~0.9 ms), as long as the vectors and the graph fit
    the memory budget. Beyond it, product-quantised codes in an inverted file small enough to fit.
    """
    if n < EXACT_BELOW:
        return "Flat"
    reduced = min(dim, PCA_DIM)
    if n * (dim * 4 + reduced * 4 + HNSW_M * 2 * 4) * 1.1 <= memory_budget_gb * 2**30:
        # the graph is walked in a PCA-reduced space, then the candidates are re-scored exactly
        return f"PCA{reduced},HNSW{HNSW_M},RFlat" if reduced < dim else f"HNSW{HNSW_M}"
    nlist = nlist_for(n)
    budget_bytes_per_vector = memory_budget_gb * 2**30 / n / 1.2
    m = max(8, min(dim // 4, int(budget_bytes_per_vector)))
    while dim % m:  # PQ needs sub-vectors of equal length
        m -= 1
    return f"IVF{nlist},PQ{m}"


def nlist_for(n: int) -> int:
    """About 2 sqrt(n) lists, a power of two (training cost grows with lists x sample)."""
    return int(2 ** round(math.log2(max(16.0, 2 * math.sqrt(n)))))


def default_search_params(factory: str, n: int) -> dict[str, float]:
    params: dict[str, float] = {}
    if "IVF" in factory:
        params["nprobe"] = min(_factory_nlist(factory), max(16, _factory_nlist(factory) // 32))
    if "HNSW" in factory:  # recall@10 1.0 at 10k and 100k with 64; 1M needs 128 for 0.995
        params["efSearch"] = 64 if n <= 200_000 else 128
    if "RFlat" in factory or "Refine" in factory:
        params["k_factor"] = 4 if "HNSW" in factory else 8
    return params


def _factory_nlist(factory: str) -> int:
    for part in factory.split(","):
        if part.startswith("IVF"):
            digits = "".join(ch for ch in part[3:] if ch.isdigit())
            return int(digits) if digits else 1
    return 1


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


@dataclass
class IndexMeta:
    """What an index file was built from; compared with the database before every use."""

    model: str
    factory: str
    dim: int
    count: int
    ids_digest: str
    built_at: float
    search_params: dict[str, float] = field(default_factory=dict)
    build_seconds: float = 0.0
    center: list[float] | None = None


@dataclass(frozen=True)
class IndexStatus:
    """How an index on disk relates to the database: fresh, missing, or stale (with why)."""

    state: str  # "fresh" | "missing" | "stale-add" | "stale-rebuild"
    reason: str = ""
    missing_ids: np.ndarray | None = None


def faiss_module():
    import faiss

    return faiss


def search_parameters(index, selector, keep: list):
    """faiss search parameters that carry ``selector`` down the wrappers to the index that searches
    (refinement -> PCA -> HNSW, IVF or flat), each level keeping its own settings (a parameter
    object's defaults would otherwise replace them: efSearch 16, k_factor 1); None for a type
    not listed here. Every object made is put in ``keep``: faiss holds bare pointers to them."""
    faiss = faiss_module()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine | faiss.IndexPreTransform):
        inner = search_parameters(
            index.base_index if isinstance(index, faiss.IndexRefine) else index.index, selector, keep
        )
        if inner is None:
            return None
        if isinstance(index, faiss.IndexRefine):
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = index.k_factor
            params.base_index_params = inner
        else:
            params = faiss.SearchParametersPreTransform()
            params.index_params = inner
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = index.hnsw.efSearch
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = index.nprobe
    elif isinstance(index, faiss.IndexFlat):
        params = faiss.SearchParameters()
    else:
        return None
    if not isinstance(index, faiss.IndexRefine | faiss.IndexPreTransform):
        params.sel = selector  # the index that searches filters as it goes
    keep.append(params)
    return params


class ItemIndex:
    """A faiss index whose labels are item ids.

    Args:
        index: A faiss ``IndexIDMap2`` around the index the factory string describes.
        meta: What it was built from (``IndexMeta``).
        ids: The id map: every item id in the index, sorted.
    """

    def __init__(self, index, meta: IndexMeta, ids: np.ndarray) -> None:
        self.index = index
        self.meta = meta
        self.ids = np.asarray(ids, dtype=np.int64)
        self._id_order: tuple[np.ndarray, np.ndarray] | None = None  # see _positions
        self.apply_search_params(meta.search_params)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        matrix: np.ndarray,
        *,
        model: str,
        factory: str = "auto",
        memory_budget_gb: float = 4.0,
        train_sample: int | None = None,
        seed: int = 0,
        center: np.ndarray | None = None,
    ) -> ItemIndex:
        """Train (when the type needs it) and fill an index over ``matrix`` rows labelled ``ids``."""
        import faiss

        if len(ids) == 0:
            raise RecsysError(f"no {model} embeddings to index: run `recsys embed` first")
        n, dim = matrix.shape
        if factory == "auto":
            factory = choose_factory(n, dim, memory_budget_gb)
        start = time.perf_counter()
        try:
            base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise RecsysError(f"index type {factory!r}: {str(exc).splitlines()[-1][:200]}") from None
        nlist = _factory_nlist(factory)
        if nlist > n:
            raise RecsysError(f"index type {factory!r} needs at least {nlist} items, the catalogue has {n}")
        index = faiss.IndexIDMap2(base)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not index.is_trained:
            sample_size = train_sample or min(n, max(64 * nlist, 20_000))
            rows = np.random.default_rng(seed).choice(n, size=min(n, sample_size), replace=False)
            try:
                index.train(matrix[np.sort(rows)])
            except RuntimeError as exc:
                detail = str(exc).splitlines()[-1].split("failed: ")[-1][:200]
                raise RecsysError(
                    f"index type {factory!r} cannot be trained on {n} items: {detail}"
                ) from None
        ids = np.asarray(ids, dtype=np.int64)
        for begin in range(0, n, 100_000):
            index.add_with_ids(matrix[begin : begin + 100_000], ids[begin : begin + 100_000])
        meta = IndexMeta(
            model=model,
            factory=factory,
            dim=dim,
            count=n,
            ids_digest=ids_digest(np.sort(ids)),
            built_at=time.time(),
            search_params=default_search_params(factory, n),
            build_seconds=round(time.perf_counter() - start, 3),
            center=None if center is None else [float(v) for v in center],
        )
        return cls(index, meta, np.sort(ids))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add new items without a rebuild (the trained structure is kept)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._id_order = None
        self.ids = np.sort(np.concatenate([self.ids, ids]))
        self.meta.count = len(self.ids)
        self.meta.ids_digest = ids_digest(self.ids)

    def apply_search_params(self, params: dict[str, float]) -> None:
        """nprobe (IVF), efSearch (HNSW), k_factor (refinement), wherever they sit in the wrappers."""
        import faiss

        self.meta.search_params = {**self.meta.search_params, **params}
        inner = faiss.downcast_index(self.index.index)
        if hasattr(inner, "k_factor"):
            if "k_factor" in params:
                inner.k_factor = float(params["k_factor"])
            inner = faiss.downcast_index(inner.base_index)
        if isinstance(inner, faiss.IndexPreTransform):  # PCA first: the search happens inside
            inner = faiss.downcast_index(inner.index)
        if "nprobe" in params:
            ivf = faiss.try_extract_index_ivf(inner)
            if ivf is not None:
                ivf.nprobe = int(params["nprobe"])
        if "efSearch" in params and hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = int(params["efSearch"])

    # -- queries ----------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, exclude: Iterable[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item ids) of the ``k`` nearest items per query, none of them in ``exclude``;
        id -1 pads short lists.

        Exclusion happens inside the search (a faiss ``IDSelector``): a user who has seen 500 items
        costs a search for 10, not one for 510 (a history of 150: 2.2 -> 0.7 ms, same recall).
        Index types the selector cannot reach are searched for ``k`` plus the excluded, then cut.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        excluded = np.fromiter(exclude or (), dtype=np.int64)
        k = max(1, min(int(k), len(self.ids)))
        if len(excluded) == 0:
            return self.index.search(queries, k)
        faiss = faiss_module()
        # The id map translates a selector on its own parameters (the searching index directly
        # inside it: ids); one passed further down reaches an index that knows positions.
        wrapped = isinstance(
            faiss.downcast_index(self.index.index), faiss.IndexRefine | faiss.IndexPreTransform
        )
        batch = faiss.IDSelectorBatch(self._positions(excluded) if wrapped else excluded)
        selector = faiss.IDSelectorNot(batch)
        keep = [batch, selector]
        params = search_parameters(self.index.index, selector, keep)
        if params is None:
            return self._search_past(queries, k, excluded)
        return self.index.search(queries, k, params=params)

    def _positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Where these item ids sit inside the id map (the inner index knows items by position)."""
        if self._id_order is None:
            id_map = faiss_module().vector_to_array(self.index.id_map).astype(np.int64)
            order = np.argsort(id_map, kind="stable")
            self._id_order = (order, id_map[order])
        order, sorted_ids = self._id_order
        return order[id_lookup.rows(sorted_ids, item_ids)].astype(np.int64)

    def _search_past(
        self, queries: np.ndarray, k: int, excluded: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(queries, min(len(self.ids), k + len(excluded)))
        keep = ~np.isin(ids, excluded)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        for n in range(len(queries)):
            kept = np.flatnonzero(keep[n])[:k]
            out_scores[n, : len(kept)], out_ids[n, : len(kept)] = scores[n, kept], ids[n, kept]
        return out_scores, out_ids

    # -- persistence ------------------------------------------------------------------------

    @staticmethod
    def paths(folder: Path, model: str) -> tuple[Path, Path]:
        return Path(folder) / f"{model}.faiss", Path(folder) / f"{model}.json"

    def save(self, folder: Path) -> None:
        """Write index then metadata, each atomically; the metadata names the id map."""
        import faiss

        index_path, meta_path = self.paths(folder, self.meta.model)
        index_path.parent.mkdir(parents=True, exist_ok=True)
        atomic.clear_stale(index_path.parent)  # what an earlier, killed build left behind
        tmp_index = atomic.temporary(index_path)
        faiss.write_index(self.index, str(tmp_index))
        os.replace(tmp_index, index_path)
        atomic.write_text(meta_path, json.dumps(asdict(self.meta), indent=2))

    @classmethod
    def load(cls, folder: Path, model: str) -> ItemIndex | None:
        """The saved index of ``model``, or None if there is none or it does not hold together."""
        import faiss

        index_path, meta_path = cls.paths(folder, model)
        if not (index_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = IndexMeta(**json.loads(meta_path.read_text()))
            index = faiss.read_index(str(index_path))
        except (ValueError, TypeError, RuntimeError, json.JSONDecodeError):
            return None
        if not isinstance(index, faiss.IndexIDMap2) or index.ntotal != meta.count:
            return None
        ids = np.sort(faiss.vector_to_array(index.id_map).astype(np.int64))
        if ids_digest(ids) != meta.ids_digest or meta.model != model:
            return None
        return cls(index, meta, ids)

    def status(self, db_ids: np.ndarray, model: str) -> IndexStatus:
        """Compare with the embedded items in the database (sorted ids)."""
        if self.meta.model != model:
            return IndexStatus("stale-rebuild", f"built for model {self.meta.model}, not {model}")
        if len(self.ids) == len(db_ids) and ids_digest(db_ids) == self.meta.ids_digest:
            return IndexStatus("fresh")
        gone = np.setdiff1d(self.ids, db_ids, assume_unique=True)
        if len(gone):
            return IndexStatus("stale-rebuild", f"{len(gone)} indexed item(s) no longer have embeddings")
        new = np.setdiff1d(db_ids, self.ids, assume_unique=True)
        return IndexStatus("stale-add", f"{len(new)} new item(s) not in the index", new)

    def describe(self) -> dict:
        meta = asdict(self.meta)
        meta.pop("center", None)
        return {
            **meta,
            "built_at_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.meta.built_at)),
        }
