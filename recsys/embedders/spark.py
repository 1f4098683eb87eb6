"""The embed job on Apache Spark, for catalogues too large for one machine.

reader (items still lacking a vector, or a parquet of key + path/URL joined with them) ->
Spark ``mapInPandas`` mapper (one model per executor process, batched inference through the same
``decode_image`` and ``Embedder`` as the local job) -> parquet writer (key, model, vector, error)
-> bulk importer (one transaction per chunk, duplicates ignored). Every stage can be re-run: the
reader only selects what is still missing and the importer skips what is already stored.

Needs the ``recsys[spark]`` extra (pyspark, pyarrow) and Java. On a cluster, recsys must be
installed on the executors and the workspace's images readable from them.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys import store
from recsys.embedders.runner import EmbedReport
from recsys.errors import RecsysError

#: Schema of the parquet the Spark job writes: a vector, or the reason there is none.
OUTPUT_SCHEMA = "key string, model string, vector array<float>, error string"


@dataclass
class SparkEmbedReport(EmbedReport):
    """The local report, plus where the parquet went; ``failed`` holds (item key, reason)."""

    output: str = ""
    not_in_catalogue: int = 0

    def as_dict(self) -> dict:
        return {
            **super().as_dict(),
            "engine": "spark",
            "output": self.output,
            "already_present": self.already_present,
            "not_in_catalogue": self.not_in_catalogue,
            "failed": [{"key": k, "reason": r} for k, r in self.failed],
        }


# --- mapper: runs inside the executors --------------------------------------------------------


@dataclass(frozen=True)
class EmbedPartitions:
    """The ``mapInPandas`` function: pandas frames of (key, path) in, (key, model, vector, error) out.

    Args:
        model: Registry name of the embedder (see ``recsys.embedders.MODELS``).
        models_dir: Where converted weights are cached; an executor converts them there if absent.
        batch_size: Images per inference call.
        prepare: Validate and shrink the raw bytes as ingest does (for paths/URLs outside the image
            store), so that a vector equals the one ``ingest`` + local ``embed`` would give.
        max_side: Longest side kept by ``prepare``.
        max_pixels: Decompression-bomb limit used by ``prepare``.
        timeout: Seconds per download attempt of a URL.
    """

    model: str
    models_dir: str
    batch_size: int = 64
    prepare: bool = False
    max_side: int = 256
    max_pixels: int = 64_000_000
    timeout: float = 20.0

    def __call__(self, frames: Iterator):
        import pandas as pd
        import tensorflow as tf

        from recsys.catalog import BadImage, fetch, prepare_image
        from recsys.embedders import decode_image, load_embedder

        embedder = load_embedder(self.model, Path(self.models_dir))  # once per executor process

        def load(path: str):
            data = fetch(path, timeout=self.timeout)
            if self.prepare:
                data = prepare_image(data, self.max_side, self.max_pixels)
            try:
                return decode_image(tf.constant(data))
            except tf.errors.InvalidArgumentError:
                raise BadImage("not a decodable image") from None

        for frame in frames:
            for start in range(0, len(frame), self.batch_size):
                chunk = frame.iloc[start : start + self.batch_size]
                keys, images, out = [], [], []
                for key, path in zip(chunk["key"], chunk["path"], strict=True):
                    try:
                        images.append(load(path))
                        keys.append(key)
                    except Exception as exc:  # noqa: BLE001 - one bad row must not fail the whole task
                        reason = str(exc) if isinstance(exc, BadImage) else f"{type(exc).__name__}: {exc}"
                        out.append((key, self.model, None, f"{reason}: {path}"))
                if images:
                    vectors = embedder.embed(tf.stack(images))
                    out.extend((k, self.model, v.tolist(), None) for k, v in zip(keys, vectors, strict=True))
                yield pd.DataFrame(out, columns=["key", "model", "vector", "error"])


# --- driver ------------------------------------------------------------------------------------


def spark_session(master: str, app_name: str = "recsys-embed"):
    """A Spark session; in local mode the Python workers run this same interpreter."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RecsysError("the spark engine needs pyspark: pip install 'recsys[spark]'") from None
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # pyspark warns on every pandas >= 3 import although mapInPandas works with it (tested)
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.executorEnv.PYTHONWARNINGS", "ignore::FutureWarning")  # the same, in executors
    )
    try:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark
    except Exception as exc:  # noqa: BLE001 - JVM start-up failures come as plain exceptions
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RecsysError(f"could not start Spark (master {master!r}; is Java installed?): {first}") from None


def _read_source(spark, source: str):
    """A parquet of images to embed -> DataFrame(key, path); ``path``, ``url`` or ``source`` column."""
    try:
        frame = spark.read.parquet(source)
    except Exception as exc:  # noqa: BLE001 - Spark's AnalysisException and friends
        raise RecsysError(f"{source}: cannot read as parquet ({str(exc).splitlines()[0][:160]})") from None
    column = next((c for c in ("path", "url", "source") if c in frame.columns), None)
    if "key" not in frame.columns or column is None:
        raise RecsysError(f"{source}: needs a 'key' column and a 'path', 'url' or 'source' column")
    return frame.selectExpr("CAST(key AS string) AS key", f"CAST({column} AS string) AS path")


def run_spark_job(
    workspace,
    model: str,
    output: Path,
    *,
    master: str | None = None,
    source: str | None = None,
    partitions: int | None = None,
) -> tuple[int, int]:
    """Embed what is missing on Spark into ``output`` parquet; return (rows to do, not in catalogue)."""
    import pandas as pd

    with workspace.session() as session:
        todo = store.items_missing_embedding(session, model)
    if not todo:
        return 0, 0
    spark = spark_session(master or workspace.settings.spark_master)
    try:
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        frame = pd.DataFrame(
            {"key": [k for _, k, _ in todo], "path": [str(workspace.image_file(r)) for _, _, r in todo]}
        )
        missing = spark.createDataFrame(frame, "key string, path string")
        not_in_catalogue = 0
        if source is not None:
            given = _read_source(spark, source)
            with workspace.session() as session:
                catalogue = spark.createDataFrame(
                    pd.DataFrame({"key": list(session.scalars(store.select(store.Item.key)))}), "key string"
                )
            not_in_catalogue = given.join(catalogue, "key", "left_anti").count()
            missing = given.join(missing.select("key"), "key", "inner").dropDuplicates(["key"])
        count = missing.count()
        if count == 0:
            return 0, not_in_catalogue
        settings = workspace.settings
        parts = partitions or max(spark.sparkContext.defaultParallelism, -(-count // 20_000))
        mapper = EmbedPartitions(
            model=model,
            models_dir=str(settings.models_dir.resolve()),
            batch_size=settings.batch_size,
            prepare=source is not None,
            max_side=settings.max_side,
            max_pixels=settings.max_pixels,
            timeout=settings.timeout,
        )
        result = missing.repartition(parts).mapInPandas(mapper, OUTPUT_SCHEMA)
        result.write.mode("overwrite").parquet(str(output))
        return count, not_in_catalogue
    finally:
        spark.stop()


def import_vectors(workspace, output: Path, report: SparkEmbedReport, *, progress: bool = True) -> None:
    """Bulk-load a Spark output parquet into the database, one transaction per chunk."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    dataset = pq.ParquetDataset(str(output))
    total = sum(f.metadata.num_rows for f in dataset.fragments)
    bar = tqdm(total=total, unit="vec", desc="import vectors", disable=not progress)
    for fragment in dataset.fragments:
        for batch in fragment.to_batches(batch_size=5_000):
            rows = batch.to_pydict()
            ok = [i for i, e in enumerate(rows["error"]) if e is None]
            report.failed += [(rows["key"][i], e) for i, e in enumerate(rows["error"]) if e is not None]
            with workspace.session() as session, session.begin():
                ids = store.item_ids(session, (rows["key"][i] for i in ok))
                kept = [i for i in ok if rows["key"][i] in ids and rows["model"][i] == report.model]
                report.not_in_catalogue += len(ok) - len(kept)
                if kept:
                    matrix = np.asarray([rows["vector"][i] for i in kept], dtype=np.float32)
                    stored = store.write_embeddings(
                        session, report.model, [ids[rows["key"][i]] for i in kept], matrix
                    )
                    report.embedded += stored
                    report.already_present += len(kept) - stored
            bar.update(batch.num_rows)
    bar.close()


def embed_with_spark(
    workspace,
    model: str | None = None,
    *,
    master: str | None = None,
    source: str | None = None,
    output: str | Path | None = None,
    partitions: int | None = None,
    progress: bool = True,
) -> SparkEmbedReport:
    """Embed every item lacking a ``model`` vector on Spark, then import the vectors.

    Args:
        workspace: The workspace whose catalogue and database are used.
        model: Embedder name; the workspace's setting by default.
        master: Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``); the setting by default.
        source: Parquet of (key, path/url) to read images from instead of the image store; only
            keys that are catalogue items still lacking a vector are embedded.
        output: Where the job writes its parquet; under the workspace's ``spark/`` by default.
        partitions: Spark partitions; by default the cluster's parallelism (or 20,000 rows each).
        progress: Show a progress bar while importing.
    """
    from recsys.embedders import MODELS

    model = model or workspace.settings.model
    if model not in MODELS:
        raise RecsysError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    start = time.perf_counter()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    output = Path(output) if output else workspace.home / "spark" / f"{model}-{stamp}.parquet"
    report = SparkEmbedReport(model=model, output=str(output))
    count, report.not_in_catalogue = run_spark_job(
        workspace, model, output, master=master, source=source, partitions=partitions
    )
    if count:
        import_vectors(workspace, output, report, progress=progress)
    report.seconds = time.perf_counter() - start
    return report
