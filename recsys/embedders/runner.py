"""The embed job: every item lacking a vector for a model gets one, in committed batches.

reader (items without a vector) -> tf.data mapper (parallel read + decode + resize, batch,
prefetch) -> compiled inference -> writer (one transaction per batch). A run killed at any point
leaves whole batches behind it; the next run starts from what is still missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recsys import store


@dataclass
class EmbedReport:
    model: str
    embedded: int = 0
    already_present: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "embedded": self.embedded,
            "failed": [{"item_id": i, "reason": r} for i, r in self.failed],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
        }


def make_dataset(paths: list[str], ids: list[int], batch_size: int):
    """(ids, images) batches; unreadable files are dropped (the caller notices the missing ids)."""
    import tensorflow as tf

    from recsys.embedders import decode_image

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(ids, np.int64), paths))
    ds = ds.map(
        lambda i, p: (i, decode_image(tf.io.read_file(p))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,  # ids travel with their images, so order is free
    )
    ds = ds.ignore_errors()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def embed_missing(
    workspace, model: str | None = None, *, limit: int | None = None, progress: bool = True
) -> EmbedReport:
    """Embed every item of ``workspace`` that has no vector for ``model`` yet."""
    from tqdm import tqdm

    embedder = workspace.embedder(model)
    report = EmbedReport(model=embedder.name)
    with workspace.session() as session:
        todo = store.items_missing_embedding(session, embedder.name)
    if limit is not None:
        todo = todo[:limit]
    ids, paths = [], []
    for item_id, _key, rel in todo:
        path = workspace.image_file(rel)
        if path.is_file():
            ids.append(item_id)
            paths.append(str(path))
        else:
            report.failed.append((item_id, f"image file missing: {path}"))
    if not ids:
        return report
    done: set[int] = set()
    bar = tqdm(total=len(ids), unit="img", desc=f"embed {embedder.name}", disable=not progress)
    start = time.perf_counter()
    for batch_ids, images in make_dataset(paths, ids, workspace.settings.batch_size):
        vectors = embedder.embed(images)
        batch = batch_ids.numpy().tolist()
        with workspace.session() as session, session.begin():
            store.write_embeddings(session, embedder.name, batch, vectors)
        done.update(batch)
        report.embedded += len(batch)
        bar.update(len(batch))
    report.seconds = time.perf_counter() - start
    bar.close()
    for item_id, path in zip(ids, paths, strict=True):
        if item_id not in done:
            report.failed.append((item_id, f"could not decode {path}"))
    return report
