"""Embedding throughput: the `recsys embed` job against the bare model, in one run.

The job reads files, decodes, resizes, batches, infers and commits to SQLite; the bare model only
infers on tensors already decoded into memory, in batches of the same size. Their ratio says how
much the pipeline around the model costs (goal: >= 0.9).

    python bench/embed_throughput.py [--catalog DIR] [--repeats 3] [--batch-size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete  # noqa: E402

import recsys  # noqa: E402,F401  (sets the legacy-Keras switch first)
from recsys import store  # noqa: E402
from recsys.catalog import ingest  # noqa: E402
from recsys.embedders.runner import embed_missing, make_dataset  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402


def _first_images(catalog: Path, n: int, workdir: Path) -> Path:
    """A CSV naming the first ``n`` images of a folder catalogue (the bench's fixed workload)."""
    files = sorted(p for p in catalog.rglob("*.jpg"))[:n]
    csv = workdir / "catalog.csv"
    lines = ["key,image,label"] + [
        f"{p.relative_to(catalog).with_suffix('').as_posix()},{p},{p.parent.name}" for p in files
    ]
    csv.write_text("\n".join(lines) + "\n")
    return csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = ROOT.parent / "shared" / "data" / "flowers5"
    parser.add_argument("--catalog", default=str(shared if shared.is_dir() else ROOT / "data" / "flowers"))
    parser.add_argument("--images", type=int, default=1000, help="Use the first N images.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), model=args.model, batch_size=args.batch_size)
        ws = Workspace(settings)
        ingest(ws, _first_images(Path(args.catalog), args.images, Path(home)), progress=False)
        embedder = ws.embedder()
        with ws.session() as session:
            todo = store.items_missing_embedding(session, embedder.name)
        ids = [i for i, _ in todo]
        paths = [str(ws.image_file(p)) for _, p in todo]
        batches = [images for _, images in make_dataset(paths, ids, args.batch_size)]
        embedder.embed(batches[0])  # trace + warm up, outside every timing

        job, bare = [], []
        for _ in range(args.repeats):
            with ws.session() as session, session.begin():
                session.execute(delete(store.Embedding))
            start = time.perf_counter()
            report = embed_missing(ws, progress=False)
            job.append(report.embedded / (time.perf_counter() - start))

            start = time.perf_counter()
            for images in batches:
                embedder.embed(images)
            bare.append(len(ids) / (time.perf_counter() - start))

    result = {
        "images": len(ids),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "embed_job_images_per_s_median": round(statistics.median(job), 1),
        "bare_model_images_per_s_median": round(statistics.median(bare), 1),
        "ratio_median": round(statistics.median(j / b for j, b in zip(job, bare, strict=True)), 3),
        "embed_job_runs": [round(x, 1) for x in job],
        "bare_model_runs": [round(x, 1) for x in bare],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:34s} {value}")


if __name__ == "__main__":
    main()
