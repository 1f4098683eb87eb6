"""Recommendation latency and recall@10 of faiss index types at 10k, 100k and 1M items, in one run.

Items are a Gaussian mixture around real Lite0 embeddings (flowers5 photos and MovieLens posters
from ../shared/data): each synthetic item is a real vector plus isotropic noise, re-normalised, so
neighbourhoods keep the structure of real images (uniform random vectors would make ANN recall
meaningless). Each query is a user with 20 viewed items drawn from 4 real neighbourhoods.

What is timed is the in-process hot path of ``Recommender.recommend``, through the very function it
ranks with (``recsys.serving.ranking.rank`` with the ``average`` strategy): the profile (weighted
mean of the history vectors), the faiss search with seen items excluded, and the "because you
viewed" explanations. Not timed: the SQL read of the history and of item titles (sub-millisecond on
SQLite). Recall@10 is against exact
search (Flat) on the same queries. Prints p50/p99 ms per index and search setting.

    python bench/recommend_latency.py [--sizes 10000,100000,1000000] [--queries 300] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import recsys  # noqa: E402,F401
from recsys import store  # noqa: E402
from recsys.events import Event  # noqa: E402
from recsys.index import ItemIndex, nlist_for  # noqa: E402
from recsys.serving.ranking import rank  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.space import VectorSpace, center_and_normalise  # noqa: E402
from recsys.strategies import Catalogue, Context, Strategy  # noqa: E402
from recsys.strategies.average import Average  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def base_vectors(home: Path) -> np.ndarray:
    """Real Lite0 vectors of flowers5 + posters, embedded once into a cached workspace."""
    from recsys.catalog import ingest
    from recsys.embedders.runner import embed_missing

    with Workspace(Settings(home=home)) as ws:
        with ws.session() as session:
            _, matrix = store.load_embeddings(session, "efficientnet-lite0")
        if len(matrix) < 7000:
            for folder in (SHARED / "flowers5", SHARED / "movielens_posters" / "posters"):
                if folder.is_dir():
                    ingest(ws, folder, progress=False)
            embed_missing(ws, progress=False)
            with ws.session() as session:
                _, matrix = store.load_embeddings(session, "efficientnet-lite0")
    if len(matrix) == 0:
        sys.exit("error: no base embeddings: ../shared/data is missing")
    return matrix


def mixture(
    base: np.ndarray, n: int, noise: float, rng: np.random.Generator, components: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors, each a random base vector plus structure-keeping noise; and their bases.

    The noise moves along the real data's top principal components, scaled by how much real
    images vary along each, with an expected norm of ``noise``: new items look like plausible
    variations of real ones. ``components=0`` gives isotropic noise instead, under which the
    members of a neighbourhood are all near-equidistant from any query in 1280 dimensions.
    """
    dim = base.shape[1]
    which = rng.integers(0, len(base), size=n)
    if components:
        centred = base - base.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        scale = singular[:components] / np.sqrt(np.sum(singular[:components] ** 2))
        directions = (vt[:components] * scale[:, None]).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        part = which[start : start + 50_000]
        if components:
            shift = rng.standard_normal((len(part), components), dtype=np.float32) @ directions
        else:
            shift = rng.standard_normal((len(part), dim), dtype=np.float32) / np.sqrt(dim)
        block = base[part] + shift * noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(part)] = block
    return out, which


def histories(
    base: np.ndarray, which: np.ndarray, queries: int, size: int, rng: np.random.Generator
) -> list[list[Event]]:
    """Users with a coherent taste: ``size`` items from a real neighbourhood and its 3 nearest.

    (Item ids are row + 1.) Averaging unrelated neighbourhoods would aim the profile at empty
    space, where every item is about as far as every other.
    """
    order = np.argsort(which, kind="stable")
    starts = np.searchsorted(which[order], np.arange(len(base) + 1))
    present = np.unique(which)
    out = []
    for _ in range(queries):
        seed = rng.choice(present)
        sims = base[present] @ base[seed]
        taste = present[np.argsort(-sims)[:4]]
        picked: list[int] = []
        for b in taste:
            members = order[starts[b] : starts[b + 1]]
            picked += rng.choice(members, size=min(len(members), size // 4), replace=False).tolist()
        now = datetime.now(UTC)
        out.append([Event(int(r) + 1, "view", None, now) for r in dict.fromkeys(picked)])
    return out


def timed_queries(served: Strategy, users: list[list], k: int):
    """Each history ranked alone, as a request ranks it."""
    context = served.context
    options = {"catalogue": context.catalogue, "image_space": context.image_space}
    results, times = [], []
    for history in users[:10]:  # warm-up
        rank(served, [history], [None], k, **options)
    for history in users:
        start = time.perf_counter()
        hits, _because = rank(served, [history], [None], k, **options)[0]
        times.append((time.perf_counter() - start) * 1000)
        results.append([h[0] for h in hits])
    return results, times


def average_over(space: VectorSpace, workspace) -> Average:
    """The ``average`` strategy over a synthetic space (the catalogue is its items)."""
    n = len(space.ids)
    catalogue = Catalogue(space.ids, space.labels, np.linspace(0, 1, n))
    return Average(Context(workspace, catalogue, lambda: space), {"half_life_days": None})


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.5, help="Norm of the noise added to a base vector.")
    parser.add_argument(
        "--components", type=int, default=128, help="Principal directions the noise follows (0: isotropic)."
    )
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="Skip HNSW above this size.")
    parser.add_argument("--base-home", default=str(Path.home() / ".cache" / "recsys" / "bench-base"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    base = base_vectors(Path(args.base_home))
    workspace = Workspace(Settings(home=Path(args.base_home)))  # the settings a strategy reads
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        raw, which = mixture(base, n, args.noise, rng, args.components)
        center = raw.mean(axis=0)
        matrix = center_and_normalise(raw, center)
        del raw
        gc.collect()
        ids = np.arange(1, n + 1, dtype=np.int64)
        space = VectorSpace(ids, matrix, [None] * n, center)
        served = average_over(space, workspace)
        users = histories(base, which, args.queries, args.history, rng)
        nlist = nlist_for(n)
        configs = [("Flat", [{}])]
        if n <= args.hnsw_max:
            configs.append(("HNSW32", [{"efSearch": e} for e in (64, 128, 256, 512)]))
        configs.append((f"IVF{nlist},Flat", [{"nprobe": p} for p in (8, 16, 32, 64, 128)]))
        configs.append(
            (
                f"IVF{nlist},PQ64x4fs,RFlat",
                [{"nprobe": p, "k_factor": f} for p, f in ((16, 8), (32, 16), (64, 32))],
            )
        )
        truth = None
        for factory, sweep in configs:
            space.index = None
            gc.collect()
            index = ItemIndex.build(
                ids, matrix, model="bench", factory=factory, train_sample=min(n, 32 * nlist)
            )
            space.index = index
            for params in sweep:
                index.apply_search_params(params)
                results, times = timed_queries(served, users, args.k)
                if truth is None:
                    truth = results  # Flat is exact: the ground truth for the others
                recall = statistics.mean(
                    len(set(r) & set(t)) / args.k for r, t in zip(results, truth, strict=True)
                )
                row = {
                    "items": n,
                    "index": factory,
                    "params": params,
                    "build_s": index.meta.build_seconds,
                    "p50_ms": round(pct(times, 50), 2),
                    "p99_ms": round(pct(times, 99), 2),
                    "recall@10": round(recall, 4),
                }
                rows.append(row)
                if not args.json:
                    print(
                        f"{n:>8} {factory:28s} {json.dumps(params):28s} build {row['build_s']:7.1f}s  "
                        f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                        f"recall@10 {row['recall@10']:.4f}",
                        flush=True,
                    )
        del space, matrix
        gc.collect()
    best = [r for r in rows if r["items"] == max(x["items"] for x in rows) and r["recall@10"] >= 0.95]
    best.sort(key=lambda r: r["p50_ms"])
    summary = {"rows": rows, "fastest_at_largest_with_recall_0.95": best[0] if best else None}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            "fastest at the largest size with recall@10 >= 0.95:",
            json.dumps(summary["fastest_at_largest_with_recall_0.95"]),
        )


if __name__ == "__main__":
    main()
