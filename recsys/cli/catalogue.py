"""Catalogue commands: ingest, embed, index, similar items, clusters, the static site."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.cli.common import emit_json, open_workspace, print_hits, problem_printer, settings_options, table
from recsys.errors import RecsysError
from recsys.settings import Settings


@click.command()
@click.argument("path", type=click.Path())
@click.option("--max-side", type=int, help="Longest side kept in the image store [256].")
@click.option("--workers", type=int, help="Parallel fetch/resize threads [8].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@settings_options
def ingest(settings: Settings, path: str, max_side, workers, as_json: bool, quiet: bool) -> None:
    """Add the images of a folder (sub-folder = label) or a CSV (key,image,label,title)."""
    from recsys.catalog import ingest as run_ingest

    settings = settings.replace(max_side=max_side, workers=workers)
    ws = open_workspace(settings)
    report = run_ingest(ws, path, progress=not quiet and not as_json, on_problem=problem_printer())
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(
            f"ingested {report.added} new item(s), {report.already_present} already present, "
            f"{len(report.failed)} skipped"
        )
    if report.added == 0 and report.already_present == 0:
        raise RecsysError(f"{path}: nothing could be ingested")


@click.command("ingest-movielens")
@click.argument("folder", type=click.Path())
@click.option(
    "--like-threshold", type=float, default=4.0, show_default=True, help="Ratings >= this are likes."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@settings_options
def ingest_movielens_cmd(
    settings: Settings, folder: str, like_threshold: float, as_json: bool, quiet: bool
) -> None:
    """Load your MovieLens copy: movies with a poster as items, ratings as view/like events."""
    from recsys.movielens import ingest_movielens

    report = ingest_movielens(
        open_workspace(settings),
        folder,
        like_threshold=like_threshold,
        progress=not quiet and not as_json,
        on_problem=problem_printer(),
    )
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(
            f"{report.movies_with_poster} of {report.movies} movies have a poster "
            f"({report.items_added} new items); "
            f"{report.ratings_on_posters} of {report.ratings} ratings are on them: "
            f"{report.events_stored} events stored, {report.events_already_present} already present"
        )


@click.command()
@click.option("--batch-size", type=int, help="Images per inference batch and per commit [64].")
@click.option("--limit", type=int, help="Embed at most this many items (then stop; local engine).")
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="Run here, or on Apache Spark (needs recsys[spark] and Java).",
)
@click.option("--master", help="Spark master URL, e.g. local[2] or spark://host:7077 [RECSYS_SPARK_MASTER].")
@click.option(
    "--input",
    "source",
    help="Spark: a parquet of key + path/url to read images from, instead of the image store.",
)
@click.option("--output", type=click.Path(), help="Spark: where the vectors parquet is written.")
@click.option("--partitions", type=int, help="Spark: number of partitions.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@settings_options
def embed(
    settings: Settings, batch_size, limit, engine, master, source, output, partitions, as_json, quiet
) -> None:
    """Embed every item that has no vector for the model yet (resumable)."""
    ws = open_workspace(settings.replace(batch_size=batch_size))
    progress = not quiet and not as_json
    if engine == "spark":
        from recsys.embedders.spark import embed_with_spark

        if limit is not None:
            raise RecsysError("--limit works with the local engine only")

        report = embed_with_spark(
            ws, master=master, source=source, output=output, partitions=partitions, progress=progress
        )
        problems = [f"skipped {key}: {reason}" for key, reason in report.failed]
    else:
        if source or output or master or partitions:
            raise RecsysError("--master, --input, --output and --partitions need --engine spark")
        from recsys.embedders.runner import embed_missing

        report = embed_missing(ws, limit=limit, progress=progress)
        problems = [f"skipped item {item_id}: {reason}" for item_id, reason in report.failed]
        if report.embedded == 0 and not report.failed:
            ws.require_items()  # nothing to embed: in the workspace meant?
    for line in problems:
        click.echo(line, err=True)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(
            f"embedded {report.embedded} item(s) with {report.model} in {report.seconds:.1f} s "
            f"({report.images_per_second:.1f} images/s), {len(report.failed)} failed"
        )
    if report.embedded == 0 and report.failed:
        raise RecsysError("no item could be embedded")


@click.command()
@click.argument("item_key", required=False)
@click.option("--image", type=click.Path(dir_okay=False), help="Search with this image instead.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options
def similar(settings: Settings, item_key, image, k: int, as_json: bool) -> None:
    """Items most similar to ITEM_KEY, or to an image file with --image."""
    from recsys.recommend import Recommender

    if bool(item_key) == bool(image):
        raise RecsysError("give exactly one of ITEM_KEY or --image PATH")
    rec = Recommender(open_workspace(settings, needs_items=True))
    if image:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise RecsysError(f"{image}: {exc.strerror}") from None
        try:
            hits = rec.similar_to_image(data, k)
        except RecsysError as exc:
            raise RecsysError(f"{image}: {exc}") from None
    else:
        hits = rec.similar(item_key, k)
    print_hits(hits, as_json)


@click.command("knn-accuracy")
@click.option("-k", "k", type=int, default=1, show_default=True, help="Neighbours that vote.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def knn_accuracy(settings: Settings, k: int, as_json: bool) -> None:
    """Leave-one-out k-NN same-label accuracy of the stored embeddings."""
    from recsys.metrics import knn_accuracy as measure
    from recsys.recommend import Recommender

    rec = Recommender(open_workspace(settings, needs_items=True))
    vectors, labels = rec.vectors.labelled()
    result = measure(vectors, labels, k=k)
    result["model"] = rec.model
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"{k}-NN leave-one-out accuracy ({rec.model}, {result['items']} items): {result['accuracy']:.4f}"
    )
    click.echo(
        table(
            [{"label": lab, "accuracy": f"{acc:.4f}"} for lab, acc in result["per_label"].items()],
            ["label", "accuracy"],
        )
    )


@click.command("index")
@click.option("--index", "factory", help='faiss index_factory string (Flat, HNSW32, "IVF1024,PQ32") or auto.')
@click.option("--memory-gb", type=float, help="Memory budget for --index auto [4].")
@click.option("--show", is_flag=True, help="Describe the saved index instead of building.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def index_cmd(settings: Settings, factory, memory_gb, show: bool, as_json: bool) -> None:
    """Build (and save) the faiss index over the model's embeddings."""
    from recsys import queries
    from recsys.recommend import Recommender

    settings = settings.replace(index_factory=factory, index_memory_gb=memory_gb)
    ws = open_workspace(settings, needs_items=True)
    if show:
        state = queries.index_state(ws, settings.model)
        if state.index is None:
            raise RecsysError(f"no usable {settings.model} index in {settings.index_dir}: run `recsys index`")
        info = {**state.index.describe(), "status": state.status.state}
    else:
        info = Recommender(ws).vectors.build_index(settings.index_factory).describe()
    if as_json:
        emit_json(info)
    else:
        for key in (
            "model",
            "factory",
            "count",
            "dim",
            "built_at_iso",
            "build_seconds",
            "search_params",
            "status",
        ):
            if key in info:
                click.echo(f"{key:14s} {info[key]}")


@click.command("cluster")
@click.option("-k", "k", type=int, help="Number of clusters to compute and store.")
@click.option("--show", is_flag=True, help="List each stored cluster's size and label mix.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def cluster_cmd(settings: Settings, k, show: bool, as_json: bool) -> None:
    """k-means over item embeddings; cluster ids are stored on the items."""
    from recsys.clusters import cluster_items, cluster_summary

    if not k and not show:
        raise RecsysError("give -k N to cluster, or --show to list the stored clusters")
    ws = open_workspace(settings, needs_items=True)
    if k:
        sizes = cluster_items(ws, settings.model, k)
        if not show and not as_json:
            click.echo(f"stored {len(sizes)} clusters over {sum(sizes.values())} items")
    summary = cluster_summary(ws)
    if not summary and show:
        raise RecsysError("no clusters stored yet: run `recsys cluster -k N`")
    if as_json:
        emit_json(summary)
    elif show:
        rows = [
            {
                "cluster": c["cluster"],
                "size": c["size"],
                "purity": f"{c['purity']:.2f}",
                "labels": ", ".join(f"{lab} {n}" for lab, n in c["labels"].items()),
            }
            for c in summary
        ]
        click.echo(table(rows, ["cluster", "size", "purity", "labels"]))


@click.command("export-static")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--quantise",
    type=click.Choice(["int8", "float16"]),
    default="int8",
    show_default=True,
    help="How the vectors are stored.",
)
@click.option("--pca", type=int, help="Reduce the vectors to this many dimensions first.")
@click.option("--thumb-side", type=int, default=160, show_default=True, help="Thumbnail size, pixels.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@settings_options
def export_static_cmd(
    settings: Settings, folder: str, quantise: str, pca, thumb_side: int, as_json: bool, quiet: bool
) -> None:
    """Write a static site (thumbnails, quantised vectors, one script) that recommends in the browser."""
    from recsys.export import StaticOptions, export_static
    from recsys.recommend import Recommender

    report = export_static(
        Recommender(open_workspace(settings, needs_items=True), log=None, impressions=None),
        folder,
        StaticOptions(quantise=quantise, pca=pca, thumb_side=thumb_side),
        progress=not quiet and not as_json,
    )
    if as_json:
        emit_json(report)
    else:
        click.echo(
            f"wrote {report['items']} items to {report['folder']}: "
            f"vectors {report['vectors_file_bytes'] / 1e6:.2f} MB ({report['quantise']}, "
            f"{report['dim']} dimensions), thumbnails {report['thumbs_bytes'] / 1e6:.1f} MB; "
            f"open {report['folder']}/index.html"
        )
