"""k-means over item vectors (faiss), stored on the items: the photo-manager view of a catalogue."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update

from recsys import store
from recsys.errors import RecsysError


def cluster_items(workspace, model: str, k: int, *, seed: int = 0, niter: int = 25) -> dict[int, int]:
    """Assign every embedded item to one of ``k`` clusters; returns {cluster: size}."""
    import faiss

    with workspace.session() as session:
        ids, matrix = store.load_embeddings(session, model)
    if len(ids) == 0:
        raise RecsysError(f"no {model} embeddings to cluster: run `recsys embed` first")
    if not 1 <= k <= len(ids):
        raise RecsysError(f"cluster -k must be between 1 and {len(ids)} (the embedded items), got {k}")
    kmeans = faiss.Kmeans(matrix.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    kmeans.train(matrix)
    _, assignment = kmeans.index.search(matrix, 1)
    assignment = assignment[:, 0].astype(int)
    with workspace.session() as session, session.begin():
        session.execute(update(store.Item).values(cluster=None))
        session.execute(
            update(store.Item),
            [{"id": int(i), "cluster": int(c)} for i, c in zip(ids, assignment, strict=True)],
        )
    return dict(sorted(Counter(assignment.tolist()).items()))


def cluster_summary(workspace) -> list[dict]:
    """Each stored cluster's size and label mix (most common labels first)."""
    with workspace.session() as session:
        rows = session.execute(
            select(store.Item.cluster, store.Item.label).where(store.Item.cluster.is_not(None))
        ).all()
    by_cluster: dict[int, Counter] = {}
    for cluster, label in rows:
        by_cluster.setdefault(cluster, Counter())[label or "(none)"] += 1
    out = []
    for cluster in sorted(by_cluster):
        mix = by_cluster[cluster]
        size = sum(mix.values())
        out.append(
            {
                "cluster": cluster,
                "size": size,
                "labels": {lab: n for lab, n in mix.most_common()},
                "purity": round(mix.most_common(1)[0][1] / size, 4),
            }
        )
    return out


__all__ = ["cluster_items", "cluster_summary"]
