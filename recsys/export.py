"""`recsys export-static DIR`: the catalogue as a static site that recommends in the browser.

What it writes (opening ``DIR/index.html`` from disk works: data travels as ``<script>`` files,
which browsers load from ``file://`` where they refuse ``fetch``):

- ``thumbs/<id>.jpg``: a small thumbnail per item;
- ``vectors.js``: every item's vector in the retrieval space (centred, unit length), quantised to
  int8 (a scale per dimension) or float16, optionally PCA-reduced first, base64-encoded;
- ``items.js``: keys, labels, titles, the event weights and the cold-start list;
- ``recsys-static.js``: the one script: exact kNN over the vectors for "similar items", and "more
  like your history" from a history kept in localStorage, with the server's profile (the weighted
  mean of the viewed items' vectors) and "because you viewed X";
- ``index.html`` and ``style.css``.

The folder is built beside ``DIR`` and renamed into place (``atomic.folder``), so a failed export
leaves nothing half-written; an earlier export in ``DIR`` is replaced, any other non-empty folder is
refused.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from recsys import atomic, store
from recsys.errors import RecsysError
from recsys.events import EVENT_WEIGHTS

ASSETS = Path(__file__).resolve().parent / "static_site"
MARKER = ".recsys-static"
QUANTISATIONS = ("int8", "float16")


@dataclass(frozen=True)
class StaticOptions:
    """How the site is made.

    Attributes:
        quantise: "int8" (a scale per dimension; 1 byte a value) or "float16" (2 bytes).
        pca: Reduce the vectors to this many dimensions first (None: keep all).
        thumb_side: Longest side of the thumbnails, in pixels.
        start: How many items the cold-start grid (an empty history) offers.
    """

    quantise: str = "int8"
    pca: int | None = None
    thumb_side: int = 160
    start: int = 24


def quantise(matrix: np.ndarray, kind: str) -> tuple[bytes, list[float] | None]:
    """(raw bytes, per-dimension scales or None) of a float32 matrix."""
    if kind == "float16":
        return matrix.astype("<f2").tobytes(), None
    if kind == "int8":
        scale = np.abs(matrix).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(matrix / scale), -127, 127).astype(np.int8)
        return q.tobytes(), [float(s) for s in scale]
    raise RecsysError(f"--quantise {kind!r}: use one of {', '.join(QUANTISATIONS)}")


def dequantise(raw: bytes, kind: str, dim: int, scale: list[float] | None) -> np.ndarray:
    """What the browser decodes (for measuring what quantisation costs)."""
    if kind == "float16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(-1, dim)
    return np.frombuffer(raw, dtype=np.int8).astype(np.float32).reshape(-1, dim) * np.asarray(
        scale, np.float32
    )


def reduce(matrix: np.ndarray, dims: int) -> np.ndarray:
    """PCA to ``dims`` dimensions, rows re-normalised (the vectors are already centred)."""
    if not 1 <= dims <= matrix.shape[1]:
        raise RecsysError(f"--pca {dims}: between 1 and {matrix.shape[1]}")
    _, _, vt = np.linalg.svd(matrix - matrix.mean(axis=0), full_matrices=False)
    reduced = matrix @ vt[:dims].T
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return (reduced / np.where(norms == 0, 1, norms)).astype(np.float32)


def _thumbnail(path: Path, side: int) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=82)
        return out.getvalue()


def _js(name: str, value) -> str:
    return f"window.{name} = {json.dumps(value, separators=(',', ':'))};\n"


def export_static(
    recommender, folder: str | Path, options: StaticOptions = StaticOptions(), *, progress=True
) -> dict:
    """Write the static site of ``recommender``'s catalogue and model into ``folder``."""
    from tqdm import tqdm

    folder = Path(folder).expanduser().resolve()
    if folder.exists() and (
        not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER).exists())
    ):
        raise RecsysError(f"{folder}: exists and is not an earlier export; pick an empty or new folder")
    if options.quantise not in QUANTISATIONS:
        raise RecsysError(f"--quantise {options.quantise!r}: use one of {', '.join(QUANTISATIONS)}")
    workspace = recommender.workspace
    space = recommender.vectors.require()
    matrix = space.matrix if options.pca is None else reduce(space.matrix, options.pca)
    raw, scale = quantise(matrix, options.quantise)
    with workspace.session() as s:
        rows = {
            r.id: r
            for r in s.execute(
                select(
                    store.Item.id, store.Item.key, store.Item.label, store.Item.title, store.Item.image_path
                )
            )
        }
    start = [r.item_id for r in recommender.popular(options.start)]
    with atomic.folder(folder, clear=False) as building:  # an earlier export goes once this one is whole
        (building / "thumbs").mkdir()
        for item_id in tqdm(space.ids.tolist(), desc="thumbnails", unit="item", disable=not progress):
            path = workspace.image_file(rows[item_id].image_path)
            try:
                thumb = _thumbnail(path, options.thumb_side)
            except OSError as exc:  # missing or unreadable (PIL's errors are OSErrors too)
                raise RecsysError(
                    f"item {rows[item_id].key!r}: its image {path} cannot be read "
                    f"({type(exc).__name__}); `recsys doctor` says how to repair"
                ) from None
            (building / "thumbs" / f"{item_id}.jpg").write_bytes(thumb)
        items = [
            {"id": int(i), "key": rows[i].key, "label": rows[i].label, "title": rows[i].title}
            for i in space.ids.tolist()
        ]
        meta = {
            "model": space.name,
            "dim": int(matrix.shape[1]),
            "count": len(items),
            "quantise": options.quantise,
            "scale": scale,
            "pca": options.pca,
            "event_weights": EVENT_WEIGHTS,
            "start": start,
        }
        (building / "items.js").write_text(_js("RECSYS_ITEMS", items) + _js("RECSYS_META", meta))
        (building / "vectors.js").write_text(f'window.RECSYS_VECTORS = "{base64.b64encode(raw).decode()}";\n')
        for asset in ("index.html", "recsys-static.js", "style.css"):
            shutil.copyfile(ASSETS / asset, building / asset)
        (building / MARKER).write_text(json.dumps({"model": space.name, "items": len(items)}))
    return {
        "folder": str(folder),
        "items": len(items),
        "dim": int(matrix.shape[1]),
        "quantise": options.quantise,
        "pca": options.pca,
        "vector_bytes": len(raw),
        "vectors_file_bytes": (folder / "vectors.js").stat().st_size,
        "thumbs_bytes": sum(p.stat().st_size for p in (folder / "thumbs").iterdir()),
        "total_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
    }
