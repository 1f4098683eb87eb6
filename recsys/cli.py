"""``recsys`` command line: a thin shell over ``Workspace``, the jobs and ``Recommender``.

Every command takes ``--home`` / ``--db`` (or ``RECSYS_HOME`` / ``RECSYS_DB_URL``); bad input ends
in one ``error: ...`` line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from sqlalchemy.exc import OperationalError

from recsys.errors import RecsysError
from recsys.settings import Settings

BUNDLED_CATALOG = Path(__file__).resolve().parent.parent / "data" / "flowers"


def _settings_options(fn):
    """--home, --db and --model on every command; values left unset fall back to RECSYS_*."""

    @click.option("--home", type=click.Path(file_okay=False), help="Workspace folder [RECSYS_HOME].")
    @click.option("--db", "db_url", help="SQLAlchemy database URL [RECSYS_DB_URL].")
    @click.option("--model", help="Embedding model [RECSYS_MODEL], e.g. efficientnet-lite0.")
    @functools.wraps(fn)
    def wrapper(home, db_url, model, **kwargs):
        settings = Settings.from_env(home=home, db_url=db_url, model=model)
        return fn(settings, **kwargs)

    return wrapper


def _open(settings: Settings, migrate: bool = True):
    """The command's workspace; its connections are closed when the command ends (also in-process)."""
    from recsys.workspace import Workspace

    workspace = Workspace(settings, migrate=migrate)
    click.get_current_context().call_on_close(workspace.close)
    return workspace


def _emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    head = "  ".join(c.ljust(widths[c]) for c in columns)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([head, "  ".join("-" * widths[c] for c in columns), *body])


def _print_hits(hits, as_json: bool) -> None:
    rows = [
        {"rank": n, "score": f"{h.score:.4f}", "key": h.key, "label": h.label or "", "title": h.title or ""}
        for n, h in enumerate(hits, 1)
    ]
    if as_json:
        _emit_json([h.as_dict() for h in hits])
    else:
        click.echo(_table(rows, ["rank", "score", "key", "label", "title"]))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="recsys")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own start-up and info lines.")
def cli(verbose: bool) -> None:
    """recsys: "more like your history" recommendations from image embeddings."""
    if verbose:  # before any command imports TensorFlow
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        from recsys import quiet_tensorflow

        quiet_tensorflow()


# --- db --------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@_settings_options
def db_upgrade(settings: Settings, revision: str) -> None:
    """Migrate the database up to REVISION (default: newest)."""
    from recsys import store

    ws = _open(settings, migrate=False)
    click.echo(f"database at revision {store.migrate(ws.engine, revision)}")


@db.command("downgrade")
@click.argument("revision")
@_settings_options
def db_downgrade(settings: Settings, revision: str) -> None:
    """Migrate the database down to REVISION ('base' drops everything)."""
    from recsys import store

    ws = _open(settings, migrate=False)
    click.echo(f"database at revision {store.migrate(ws.engine, revision, downgrade=True)}")


@db.command("current")
@_settings_options
def db_current(settings: Settings) -> None:
    """Print the database's schema revision and the newest one."""
    from recsys import store

    ws = _open(settings, migrate=False)
    click.echo(f"current {store.current_revision(ws.engine)}  head {store.head_revision()}")


# --- catalogue and embeddings ----------------------------------------------------------------


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--max-side", type=int, help="Longest side kept in the image store [256].")
@click.option("--workers", type=int, help="Parallel fetch/resize threads [8].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_settings_options
def ingest(settings: Settings, path: str, max_side, workers, as_json: bool, quiet: bool) -> None:
    """Add the images of a folder (sub-folder = label) or a CSV (key,image,label,title)."""
    from recsys.catalog import ingest as run_ingest

    settings = settings.replace(max_side=max_side, workers=workers)
    ws = _open(settings)

    def show(where: str, reason: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"skipped {where}: {reason}", file=sys.stderr)

    report = run_ingest(ws, path, progress=not quiet and not as_json, on_problem=show)
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(
            f"ingested {report.added} new item(s), {report.already_present} already present, "
            f"{len(report.failed)} skipped"
        )
    if report.added == 0 and report.already_present == 0:
        raise RecsysError(f"{path}: nothing could be ingested")


@cli.command("ingest-movielens")
@click.argument("folder", type=click.Path())
@click.option(
    "--like-threshold", type=float, default=4.0, show_default=True, help="Ratings >= this are likes."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_settings_options
def ingest_movielens_cmd(
    settings: Settings, folder: str, like_threshold: float, as_json: bool, quiet: bool
) -> None:
    """Load your MovieLens copy: movies with a poster as items, ratings as view/like events."""
    from recsys.movielens import ingest_movielens

    report = ingest_movielens(
        _open(settings),
        folder,
        like_threshold=like_threshold,
        progress=not quiet and not as_json,
        on_problem=lambda w, r: click.echo(f"skipped {w}: {r}", err=True),
    )
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(
            f"{report.movies_with_poster} of {report.movies} movies have a poster "
            f"({report.items_added} new items); "
            f"{report.ratings_on_posters} of {report.ratings} ratings are on them: "
            f"{report.events_stored} events stored, {report.events_already_present} already present"
        )


@cli.command()
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
@_settings_options
def embed(
    settings: Settings, batch_size, limit, engine, master, source, output, partitions, as_json, quiet
) -> None:
    """Embed every item that has no vector for the model yet (resumable)."""
    ws = _open(settings.replace(batch_size=batch_size))
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
    for line in problems:
        click.echo(line, err=True)
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(
            f"embedded {report.embedded} item(s) with {report.model} in {report.seconds:.1f} s "
            f"({report.images_per_second:.1f} images/s), {len(report.failed)} failed"
        )
    if report.embedded == 0 and report.failed:
        raise RecsysError("no item could be embedded")


@cli.command()
@click.argument("item_key", required=False)
@click.option("--image", type=click.Path(dir_okay=False), help="Search with this image instead.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_settings_options
def similar(settings: Settings, item_key, image, k: int, as_json: bool) -> None:
    """Items most similar to ITEM_KEY, or to an image file with --image."""
    from recsys.recommend import Recommender

    if bool(item_key) == bool(image):
        raise RecsysError("give exactly one of ITEM_KEY or --image PATH")
    rec = Recommender(_open(settings))
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
    _print_hits(hits, as_json)


@cli.command("knn-accuracy")
@click.option("-k", "k", type=int, default=1, show_default=True, help="Neighbours that vote.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def knn_accuracy(settings: Settings, k: int, as_json: bool) -> None:
    """Leave-one-out k-NN same-label accuracy of the stored embeddings."""
    from recsys.evaluate import knn_accuracy as measure
    from recsys.recommend import Recommender

    rec = Recommender(_open(settings))
    vectors, labels = rec.labelled_vectors()
    result = measure(vectors, labels, k=k)
    result["model"] = rec.model
    if as_json:
        _emit_json(result)
        return
    click.echo(
        f"{k}-NN leave-one-out accuracy ({rec.model}, {result['items']} items): {result['accuracy']:.4f}"
    )
    click.echo(
        _table(
            [{"label": lab, "accuracy": f"{acc:.4f}"} for lab, acc in result["per_label"].items()],
            ["label", "accuracy"],
        )
    )


# --- interactions, index, recommendations ----------------------------------------------------


@cli.command("record")
@click.option("--user", help="User key (created on first sight).")
@click.option("--item", help="Item key.")
@click.option("--event", default="view", show_default=True, help="view, click, like or purchase.")
@click.option("--at", "at", help="When (ISO-8601 or Unix seconds); default now.")
@click.option("--weight", type=float, help="Weight in the profile (default: by event type).")
@click.option("--event-key", help="Idempotency key: the same key is stored once.")
@click.option("--request-id", help="The request_id of the list the click came from (attributes it).")
@click.option("--csv", "csv_path", type=click.Path(), help="Bulk: user,item,event,timestamp[,weight].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_settings_options
def record_cmd(
    settings: Settings, user, item, event, at, weight, event_key, request_id, csv_path, as_json: bool
) -> None:
    """Record one interaction, or a CSV of them (bad rows reported, valid rows kept)."""
    from recsys.interactions import import_csv
    from recsys.recommend import Recommender

    if bool(csv_path) == bool(user or item):
        raise RecsysError("give either --user and --item, or --csv FILE")
    ws = _open(settings)
    if csv_path:
        report = import_csv(ws, csv_path, on_problem=lambda w, r: click.echo(f"rejected {w}: {r}", err=True))
    else:
        if not (user and item):
            raise RecsysError("--user and --item are both required")
        report = Recommender(ws, log=None).record(user, item, event, at, weight, event_key, request_id)
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(
            f"stored {report.stored} event(s), {report.duplicates} duplicate(s), "
            f"{len(report.rejected)} rejected"
        )
    if report.stored == 0 and report.rejected:
        raise RecsysError("no event could be stored")


@cli.command("index")
@click.option("--index", "factory", help='faiss index_factory string (Flat, HNSW32, "IVF1024,PQ32") or auto.')
@click.option("--memory-gb", type=float, help="Memory budget for --index auto [4].")
@click.option("--show", is_flag=True, help="Describe the saved index instead of building.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def index_cmd(settings: Settings, factory, memory_gb, show: bool, as_json: bool) -> None:
    """Build (and save) the faiss index over the model's embeddings."""
    from recsys.index import ItemIndex
    from recsys.recommend import Recommender

    settings = settings.replace(index_factory=factory, index_memory_gb=memory_gb)
    ws = _open(settings)
    if show:
        index = ItemIndex.load(settings.index_dir, settings.model)
        if index is None:
            raise RecsysError(f"no usable {settings.model} index in {settings.index_dir}: run `recsys index`")
        from recsys import store

        with ws.session() as session:
            db_ids, _ = store.load_embeddings(session, settings.model)
        info = {**index.describe(), "status": index.status(db_ids, settings.model).state}
    else:
        index = Recommender(ws).build_index(settings.index_factory)
        info = index.describe()
    if as_json:
        _emit_json(info)
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


@cli.command("recommend")
@click.option("--user", required=True, help="User key.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many items.")
@click.option(
    "--strategy",
    default="auto",
    show_default=True,
    help="auto (the evaluated best), average, popular, random, ease, als, two-tower.",
)
@click.option("--model-version", type=int, help="Two-tower version (default: the latest).")
@click.option("--diversify", is_flag=True, help="Re-rank with maximal marginal relevance.")
@click.option("--lambda", "mmr_lambda", type=float, help="MMR relevance weight, 0..1 [0.7].")
@click.option("--label", "labels", multiple=True, help="Only items with this label (repeatable).")
@click.option("--exclude-label", "exclude_labels", multiple=True, help="Never items with this label.")
@click.option("--half-life", "half_life", type=float, help="Recency half-life of events, in days.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def recommend_cmd(
    settings: Settings,
    user,
    model_version,
    k,
    strategy,
    diversify,
    mmr_lambda,
    labels,
    exclude_labels,
    half_life,
    as_json: bool,
) -> None:
    """Top-k unseen items for a user, each with "because you viewed X"."""
    from recsys.recommend import Recommender

    rec = Recommender(_open(settings))
    result = rec.recommend(
        user,
        k,
        strategy=strategy,
        diversify=diversify,
        mmr_lambda=mmr_lambda,
        labels=labels,
        exclude_labels=exclude_labels,
        half_life_days=half_life,
        model_version=model_version,
    )
    if as_json:
        _emit_json(result.as_dict())
        return
    for note in result.notes:
        click.echo(f"({note})")
    click.echo(
        f"(request id {result.request_id}: `recsys record --request-id` attributes a click to this list)"
    )
    rows = [
        {
            "rank": n,
            "score": f"{r.score:.4f}",
            "key": r.key,
            "label": r.label or "",
            "because you viewed": r.because or "",
        }
        for n, r in enumerate(result.items, 1)
    ]
    click.echo(_table(rows, ["rank", "score", "key", "label", "because you viewed"]))


@cli.command("cluster")
@click.option("-k", "k", type=int, help="Number of clusters to compute and store.")
@click.option("--show", is_flag=True, help="List each stored cluster's size and label mix.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def cluster_cmd(settings: Settings, k, show: bool, as_json: bool) -> None:
    """k-means over item embeddings; cluster ids are stored on the items."""
    from recsys.clusters import cluster_items, cluster_summary

    if not k and not show:
        raise RecsysError("give -k N to cluster, or --show to list the stored clusters")
    ws = _open(settings)
    if k:
        sizes = cluster_items(ws, settings.model, k)
        if not show and not as_json:
            click.echo(f"stored {len(sizes)} clusters over {sum(sizes.values())} items")
    summary = cluster_summary(ws)
    if not summary and show:
        raise RecsysError("no clusters stored yet: run `recsys cluster -k N`")
    if as_json:
        _emit_json(summary)
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
        click.echo(_table(rows, ["cluster", "size", "purity", "labels"]))


@cli.command("train")
@click.option(
    "--strategy",
    type=click.Choice(["two-tower", "ease", "als"]),
    default="two-tower",
    show_default=True,
    help="What to train; each run saves a new version to the model registry.",
)
@click.option(
    "--epochs", type=int, help="Two-tower: most epochs (early stopping on validation recall@10) [20]."
)
@click.option("--dim", type=int, help="Two-tower: tower output dimension [64].")
@click.option(
    "--val-fraction", type=float, help="Two-tower: share of latest events for early stopping [0.1]."
)
@click.option("--holdout", type=float, help="Share of latest events never trained on, for `evaluate` [0].")
@click.option(
    "--cold-share", type=float, help="Two-tower: leave this share of items out entirely (new items)."
)
@click.option("--seed", type=int, help="Seed (of the --cold-share items too) [0].")
@click.option("--batch-size", "train_batch", type=int, help="Two-tower: examples per batch [256].")
@click.option("--user-ids", is_flag=True, help="Two-tower: also learn a user-id embedding.")
@click.option(
    "--history-ids/--no-history-ids", default=None, help="Two-tower: history item ids in the user tower."
)
@click.option("--id-dropout", type=float, help="Two-tower: chance an item id is hidden in training.")
@click.option(
    "--continue",
    "warm",
    is_flag=True,
    help="Two-tower: fine-tune the latest model on the logs as they are now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_settings_options
def train_cmd(
    settings: Settings,
    strategy: str,
    holdout,
    cold_share,
    seed,
    epochs,
    dim,
    val_fraction,
    train_batch,
    user_ids: bool,
    history_ids: bool | None,
    id_dropout: float | None,
    warm: bool,
    as_json: bool,
) -> None:
    """Train a model on the interaction logs (two-tower, or the EASE/ALS peers); saves a new version."""
    import dataclasses

    from recsys.twotower import TwoTowerConfig, train

    log = functools.partial(click.echo, err=as_json)
    if strategy != "two-tower":
        for flag, value in (
            ("--epochs", epochs),
            ("--dim", dim),
            ("--cold-share", cold_share),
            ("--continue", warm),
        ):
            if value:
                raise RecsysError(f"{flag} is for --strategy two-tower")
        report = _train_peer(_open(settings), strategy, holdout or 0.0, seed or 0, log)
        if as_json:
            _emit_json(report)
        else:
            click.echo(
                f"saved {strategy} v{report['version']} ({report['seconds']:.1f} s): {report['params']}"
            )
        return
    given = {
        "epochs": epochs,
        "dim": dim,
        "val_fraction": val_fraction,
        "batch_size": train_batch,
        "holdout": holdout,
        "cold_share": cold_share,
        "seed": seed,
        "history_ids": history_ids,
        "id_dropout": id_dropout,
    }
    config = dataclasses.replace(TwoTowerConfig(), **{k: v for k, v in given.items() if v is not None})
    if user_ids:
        config = dataclasses.replace(config, user_ids=True)
    for name in ("val_fraction", "holdout", "cold_share", "id_dropout"):
        if not 0 <= getattr(config, name) < 1:
            raise RecsysError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(config, name)}")
    report = train(_open(settings), config, warm_start=warm, log=log)
    if as_json:
        _emit_json(report.as_dict())
    else:
        click.echo(
            f"saved two-tower v{report.version} in {report.path} ({report.seconds:.1f} s, "
            f"best epoch {report.best_epoch})"
        )


def _train_peer(ws, name: str, holdout: float, seed: int, log) -> dict:
    """Fit EASE or ALS on the logs (minus a temporal holdout, if asked) and register the version."""
    import time

    from recsys import evaluate as ev
    from recsys import registry
    from recsys.recommend import Recommender

    if not 0 <= holdout < 1:
        raise RecsysError(f"--holdout must be in [0, 1), got {holdout}")
    started = time.perf_counter()
    history = ev.load_history(ws)
    if holdout:
        history = ev.temporal_split(history, fraction=holdout).train
    if not history:
        raise RecsysError("no interactions to train on: record some, or `recsys simulate`")
    log(f"fitting {name} on {sum(len(v) for v in history.values())} events of {len(history)} users")
    fitted = Recommender(ws, use_index=False, log=None).fitted(name, history, seed=seed)
    params = {**fitted.params, "holdout": holdout, "split": "temporal"}
    version, _ = registry.save(
        ws,
        name,
        fitted.write,
        base_model=ws.settings.model,
        params=params,
        metrics={"grid": params.get("grid")},
    )
    return {
        "strategy": name,
        "version": version,
        "params": {k: v for k, v in params.items() if k != "grid"},
        "grid": params.get("grid"),
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- simulation and evaluation --------------------------------------------------------------


@cli.command("simulate")
@click.option("--users", type=int, default=100, show_default=True, help="Simulated users.")
@click.option("--events-per-user", type=int, default=30, show_default=True, help="Events per user.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed: same logs).")
@click.option("--zipf", type=float, help="Popularity skew inside a label (Zipf exponent) [0.8].")
@click.option("--visual-temperature", type=float, help="Sharpness of visual tastes; 0: none [0.05].")
@click.option(
    "--online",
    is_flag=True,
    help="Visitors browse served lists (auto, experiments, impressions) and click what they like.",
)
@click.option("--sessions", type=int, default=5, show_default=True, help="--online: lists each visitor sees.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_settings_options
def simulate_cmd(
    settings: Settings,
    users: int,
    events_per_user: int,
    seed: int,
    zipf: float | None,
    visual_temperature: float | None,
    online: bool,
    sessions: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Write SYNTHETIC interaction logs for a labelled catalogue (for demos and tests).

    --online instead sends simulated visitors through the served lists, as the page would.
    """
    from recsys.simulate import OnlineConfig, SimulationConfig, simulate, simulate_online

    if users < 1 or events_per_user < 1:
        raise RecsysError("--users and --events-per-user must be at least 1")
    if online:
        from recsys.recommend import Recommender

        result = simulate_online(
            Recommender(_open(settings), log=None),
            OnlineConfig(users=users, seed=seed, sessions=sessions),
            progress=not quiet and not as_json,
        )
        if as_json:
            _emit_json(result)
        else:
            arms = ", ".join(f"{arm} {n}" for arm, n in result["users_per_arm"].items())
            click.echo(
                f"{result['users']} simulated visitors saw {result['lists']} lists "
                f"({result['impressions']} impressions) and clicked {result['clicks']} times"
                + (f"; experiment {result['experiment']}: {arms}" if result["experiment"] else "")
            )
        return
    result = simulate(
        _open(settings),
        SimulationConfig(
            users=users,
            events_per_user=events_per_user,
            seed=seed,
            **{
                k: v
                for k, v in {"zipf": zipf, "visual_temperature": visual_temperature}.items()
                if v is not None
            },
        ),
        progress=not quiet and not as_json,
    )
    if as_json:
        _emit_json(result)
    else:
        click.echo(
            f"simulated {result['users']} users, {result['events']} events "
            f"({result['stored']} stored, {result['duplicates']} already there); these logs are synthetic"
        )


@cli.group()
def experiment() -> None:
    """A/B experiments: split `auto` traffic between strategies and compare click-through rates."""


@experiment.command("start")
@click.argument("name")
@click.option(
    "--strategies", "arms", required=True, help="Comma-separated arms, control first: popular,average."
)
@click.option("--split", help="Percent per arm, e.g. 50,50 [even].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def experiment_start(settings: Settings, name: str, arms: str, split, as_json: bool) -> None:
    """Start NAME: from now on `auto` serves each user their arm (assigned by a hash, never switched)."""
    from recsys import experiments

    names = [a.strip() for a in arms.split(",") if a.strip()]
    started = experiments.start(_open(settings), name, names, experiments.parse_split(split, len(names)))
    if as_json:
        _emit_json(started.as_dict())
    else:
        shares = ", ".join(f"{a} {s:g}%" for a, s in zip(started.strategies, started.split, strict=True))
        click.echo(f"experiment {started.name} started: {shares}")


@experiment.command("stop")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def experiment_stop(settings: Settings, name: str, as_json: bool) -> None:
    """Stop NAME: `auto` serves the evaluated best again; impressions and clicks are kept."""
    from recsys import experiments

    stopped = experiments.stop(_open(settings), name)
    if as_json:
        _emit_json(stopped.as_dict())
    else:
        click.echo(f"experiment {stopped.name} stopped at {stopped.stopped_at:%Y-%m-%d %H:%M:%S} UTC")


@experiment.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def experiment_list(settings: Settings, as_json: bool) -> None:
    """Every experiment, newest first."""
    from recsys import experiments

    found = [e.as_dict() for e in experiments.all_experiments(_open(settings))]
    if as_json:
        _emit_json(found)
        return
    rows = [
        {**e, "strategies": ",".join(e["strategies"]), "state": "running" if e["running"] else "stopped"}
        for e in found
    ]
    click.echo(
        _table(rows, ["name", "strategies", "state", "started_at", "stopped_at"])
        if rows
        else "no experiments yet"
    )


@experiment.command("report")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def experiment_report(settings: Settings, name: str, as_json: bool) -> None:
    """Per arm: users, impressions, clicks, CTR (95% interval); each arm against the first."""
    from recsys import experiments

    result = experiments.report(_open(settings), name)
    if as_json:
        _emit_json(result)
        return
    click.echo(experiments.format_report(result))


@cli.group()
def impressions() -> None:
    """The log of what was shown."""


@impressions.command("prune")
@click.option("--older-than", "days", type=float, help="Days kept [RECSYS_IMPRESSION_RETENTION_DAYS, 90].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def impressions_prune(settings: Settings, days: float | None, as_json: bool) -> None:
    """Delete impressions older than the retention setting (clicks stay in the events)."""
    from recsys.impressions import prune

    days = settings.impression_retention_days if days is None else days
    deleted = prune(_open(settings), days)
    if as_json:
        _emit_json({"deleted": deleted, "older_than_days": days})
    else:
        click.echo(f"deleted {deleted} impressions older than {days:g} days")


@cli.command("evaluate")
@click.option("--strategy", "strategies", multiple=True, help="Strategy to compare (repeatable) [all].")
@click.option("--k", "ks", type=int, multiple=True, help="Cut-offs (repeatable) [10 20 50 100].")
@click.option(
    "--split",
    type=click.Choice(["temporal", "random", "cold-items"]),
    default="temporal",
    show_default=True,
    help="Hold out each user's latest events, a random share, or every event on new items.",
)
@click.option(
    "--cold-share", type=float, default=0.2, show_default=True, help="cold-items: share of new items."
)
@click.option("--users", "max_users", type=int, help="Score a seeded sample of this many users.")
@click.option(
    "--holdout", type=float, default=0.2, show_default=True, help="Share of each user's events held out."
)
@click.option("--last-n", type=int, help="Hold out each user's last N events instead of a share.")
@click.option(
    "--min-events", type=int, default=3, show_default=True, help="Fewer: the user is training-only."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and the bootstrap.")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap samples.")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Write metrics.json/.csv and a plot."
)
@click.option("--embeddings", is_flag=True, help="Also report the k-NN label accuracy of the vectors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_settings_options
def evaluate_cmd(
    settings: Settings,
    strategies,
    ks,
    split,
    cold_share,
    max_users,
    holdout,
    last_n,
    min_events,
    seed,
    bootstrap,
    out_dir,
    embeddings: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Compare strategies on held-out events: recall, NDCG, MAP... with bootstrap intervals."""
    from recsys import evaluate as ev
    from recsys import strategies as registry_of
    from recsys.recommend import Recommender

    if not 0 < holdout < 1:
        raise RecsysError(f"--holdout must be between 0 and 1, got {holdout}")
    if not 0 < cold_share < 1:
        raise RecsysError(f"--cold-share must be between 0 and 1, got {cold_share}")
    ws = _open(settings)
    rec = Recommender(ws, use_index=False, log=None)
    history = ev.load_history(ws)
    if split == "temporal":
        chosen = ev.temporal_split(history, fraction=holdout, last_n=last_n, min_events=min_events)
        chosen.params = {"holdout": holdout, "last_n": last_n, "min_events": min_events}
    elif split == "random":
        chosen = ev.random_split(history, fraction=holdout, seed=seed, min_events=min_events)
        chosen.params = {"holdout": holdout, "seed": seed, "min_events": min_events}
    else:
        chosen = ev.cold_item_split(history, rec.catalogue().ids, share=cold_share, seed=seed)
    if max_users is not None and max_users < len(chosen.test):
        import numpy as np

        keep = np.random.default_rng(seed).choice(sorted(chosen.test), size=max_users, replace=False)
        chosen.test = {u: chosen.test[u] for u in keep}
        chosen.params["users_sampled"] = max_users
    problem = ev.finetune_leak(ws, settings.model, chosen)
    if problem:
        raise RecsysError(problem)
    names = list(strategies) or [n for n in registry_of.REGISTRY if n in rec.strategies() or n != "two-tower"]
    names = sorted(set(names), key=names.index)
    for name in names:
        registry_of.get(name)  # one line naming an unknown strategy
    if "two-tower" in names:
        problem = ev.two_tower_leak(ws, chosen)
        if problem and strategies:
            raise RecsysError(problem)
        if problem:
            names.remove("two-tower")
            click.echo(f"note: two-tower left out: {problem}", err=True)
    if "ease" in names and not strategies:
        from recsys.strategies.ease import memory_gb

        if memory_gb(len(rec.catalogue())) > settings.ease_memory_gb:
            names.remove("ease")
            click.echo(
                "note: ease left out: the catalogue is too large for its items x items matrix", err=True
            )
    report = ev.evaluate(
        rec,
        chosen,
        names,
        ks or ev.DEFAULT_KS,
        seed=seed,
        bootstrap=bootstrap,
        progress=not quiet and not as_json,
        log=None if as_json or quiet else functools.partial(click.echo, err=True),
    )
    report.evaluation_id = ev.save_evaluation(ws, report)
    if embeddings:
        vectors, labels = rec.labelled_vectors()
        report.embeddings = ev.knn_accuracy(vectors, labels) if len(labels) > 1 else None
    if out_dir:
        _write_evaluation(report, Path(out_dir))
    if as_json:
        _emit_json(report.as_dict())
        return
    click.echo(
        f"{len(report.users)} users evaluated ({report.split} split), "
        f"catalogue {report.catalogue_size} items, {report.seconds:.1f} s"
    )
    rows_by_k: dict[int, list[dict]] = {}
    for row in report.summary_rows():
        rows_by_k.setdefault(row["k"], []).append(row)
    for k, rows in rows_by_k.items():
        click.echo(f"\n@{k}")
        table = [
            {
                "strategy": r["strategy"],
                "recall [95% CI]": f"{r['recall']:.4f} [{r['recall_ci_low']:.4f}, {r['recall_ci_high']:.4f}]",
                "ndcg [95% CI]": f"{r['ndcg']:.4f} [{r['ndcg_ci_low']:.4f}, {r['ndcg_ci_high']:.4f}]",
                "precision": f"{r['precision']:.4f}",
                "map": f"{r['map']:.4f}",
                "hit": f"{r['hit_rate']:.3f}",
                "mrr": f"{r['mrr']:.4f}",
                "coverage": f"{r['coverage']:.3f}",
                "diversity": f"{r['diversity']:.3f}",
                "novelty": f"{r['novelty']:.2f}",
            }
            for r in rows
        ]
        click.echo(_table(table, list(table[0])))
    if report.comparison:
        c = report.comparison
        click.echo(
            f"\npaired ({c['metric']}): {c['better']} - {c['worse']} = {c['mean_difference']:+.4f} "
            f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}], p = {c['p_value']:.4f}; "
            f"{c['users_better']} users better, {c['users_worse']} worse"
        )
    if report.embeddings:
        click.echo(f"embeddings: 1-NN same-label accuracy {report.embeddings['accuracy']:.4f}")
    if out_dir:
        click.echo(f"wrote {out_dir}/metrics.json, metrics.csv, recall_at_k.png")


def _write_evaluation(report, out: Path) -> None:
    import csv

    from recsys.evaluate import plot_recall

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    rows = report.summary_rows()
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_recall(report, out / "recall_at_k.png")


@cli.command("finetune")
@click.option("--labels", "mode", flag_value="labels", help="Classify the catalogue's labels.")
@click.option(
    "--interactions",
    "mode",
    flag_value="interactions",
    help="Learn from the logs what the people who pick each item share; new pictures borrow it.",
)
@click.option("--name", help="The new model's name [lite0-<mode>].")
@click.option(
    "--unfreeze",
    type=int,
    default=1,
    show_default=True,
    help="labels: MBConv blocks trained besides the head.",
)
@click.option("--epochs", type=int, default=12, show_default=True, help="At most this many epochs.")
@click.option("--patience", type=int, default=3, show_default=True, help="Stop after this many without gain.")
@click.option("--learning-rate", type=float, help="Adam's step size [labels 1e-3, interactions 3e-3].")
@click.option(
    "--batch-size", type=int, help="Pictures (labels) or examples (interactions) a step [64 / 256]."
)
@click.option(
    "--augment", type=int, default=2, show_default=True, help="labels: augmented views per picture; 0: none."
)
@click.option("--val-share", type=float, default=0.2, show_default=True, help="Share of items held out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of held-out and cold items.")
@click.option(
    "--holdout", type=float, default=0.2, show_default=True, help="interactions: latest share never used."
)
@click.option(
    "--cold-share", type=float, default=0.0, show_default=True, help="interactions: new items never used."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress.")
@_settings_options
def finetune_cmd(settings: Settings, mode, as_json: bool, quiet: bool, batch_size, **options) -> None:
    """Train Lite0 further on your labels or interactions; register the result as a new model."""
    from recsys.finetune import FinetuneConfig, finetune

    if mode is None:
        raise RecsysError("say what to train for: --labels or --interactions")
    config = FinetuneConfig(mode=mode, batch_size=batch_size, **options)
    report = finetune(_open(settings), config, log=None if (quiet or as_json) else click.echo)
    if as_json:
        _emit_json(report.as_dict())
    else:
        if report.best_epoch == 0:
            click.echo("no epoch beat the frozen model: the registered model is the frozen one")
        click.echo(
            f"registered {report.model}: {report.metric} {report.frozen_accuracy:.4f} frozen -> "
            f"{report.finetuned_accuracy:.4f} (epoch {report.best_epoch}) in {report.seconds:.0f} s; "
            f"`recsys embed --model {report.model}` re-embeds the catalogue with it"
        )


@cli.command("export-static")
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
@_settings_options
def export_static_cmd(
    settings: Settings, folder: str, quantise: str, pca, thumb_side: int, as_json: bool, quiet: bool
) -> None:
    """Write a static site (thumbnails, quantised vectors, one script) that recommends in the browser."""
    from recsys.export import StaticOptions, export_static
    from recsys.recommend import Recommender

    report = export_static(
        Recommender(_open(settings), log=None, impressions=None),
        folder,
        StaticOptions(quantise=quantise, pca=pca, thumb_side=thumb_side),
        progress=not quiet and not as_json,
    )
    if as_json:
        _emit_json(report)
    else:
        click.echo(
            f"wrote {report['items']} items to {report['folder']}: "
            f"vectors {report['vectors_file_bytes'] / 1e6:.2f} MB ({report['quantise']}, "
            f"{report['dim']} dimensions), thumbnails {report['thumbs_bytes'] / 1e6:.1f} MB; "
            f"open {report['folder']}/index.html"
        )


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def doctor_cmd(settings: Settings, as_json: bool) -> None:
    """Check the workspace (schema, image files, embeddings, index, models) and say how to repair it."""
    from recsys import store
    from recsys.doctor import diagnose

    ws = _open(settings, migrate=False)
    if store.current_revision(ws.engine) is None:
        raise RecsysError(
            f"{ws.engine.url.render_as_string(hide_password=True)}: no recsys schema here; "
            "run `recsys db upgrade` or ingest"
        )
    findings = diagnose(ws)
    if as_json:
        _emit_json([f.as_dict() for f in findings])
    else:
        for f in findings:
            click.echo(f"{'ok ' if f.ok else 'BAD'}  {f.check:15s} {f.detail}")
            if not f.ok:
                click.echo(f"     repair: {f.repair}")
    problems = [f for f in findings if not f.ok]
    if problems:
        raise RecsysError(f"{len(problems)} problem(s) found")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--workers",
    type=int,
    help="Worker processes [one per core, gunicorn; 1 (waitress) on Windows or 1 core].",
)
@click.option("--threads", type=int, help="Threads per worker process [4].")
@click.option("--demo", is_flag=True, help="Demo mode: anyone may browse everyone's pages (loopback only).")
@click.option("--https-cookies", is_flag=True, help="Mark the session cookie Secure [RECSYS_COOKIE_SECURE].")
@click.option("--debug", is_flag=True, help="Flask's development server (loopback only; no console).")
@_settings_options
def serve_cmd(
    settings: Settings,
    host: str,
    port: int,
    workers: int | None,
    threads: int | None,
    demo: bool,
    https_cookies: bool,
    debug: bool,
) -> None:
    """Serve the "more like your history" page and its JSON API (defaults: README "Serving")."""
    if workers is not None and workers < 1 or threads is not None and threads < 1:
        raise RecsysError("--workers and --threads must be at least 1")
    _serve(settings.replace(cookie_secure=https_cookies or None), host, port, workers, threads, debug, demo)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int | None = None,
    threads: int | None = None,
    debug: bool = False,
    demo: bool = False,
) -> None:
    from web import server

    for flag, on in (("--demo", demo), ("--debug", debug)):
        if on and not _is_loopback(host):
            raise RecsysError(f"{flag} serves on loopback only (127.0.0.1, ::1), not on {host!r}")
    server.run(settings, host, port, server.plan(workers, threads, debug), demo=demo, echo=click.echo)


# --- API tokens -------------------------------------------------------------------------------


@cli.group()
def token() -> None:
    """Bearer tokens for the JSON API (only their hashes are stored)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(["read", "write", "admin"]),
    default="read",
    show_default=True,
    help="read: recommendations and search; write: also record events; admin: everything.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def token_create(settings: Settings, name: str, scope: str, as_json: bool) -> None:
    """Make a token and print it (the last line; it is not shown again)."""
    from recsys import tokens

    secret = tokens.create(_open(settings), name, scope)
    if as_json:
        _emit_json({"name": name, "token": secret, "scope": scope})
    else:
        click.echo(f"token {name!r} ({scope}); keep it now, it is not shown again:", err=True)
        click.echo(secret)


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_settings_options
def token_list(settings: Settings, include_revoked: bool, as_json: bool) -> None:
    """List tokens (names and scopes; the tokens themselves are not stored)."""
    from recsys import tokens

    found = [t.as_dict() for t in tokens.list_tokens(_open(settings), include_revoked=include_revoked)]
    if as_json:
        _emit_json(found)
    elif found:
        click.echo(_table(found, ["name", "scope", "created_at", "revoked_at"]))
    else:
        click.echo("no tokens yet: recsys token create NAME --scope read|write")


@token.command("revoke")
@click.argument("name")
@_settings_options
def token_revoke(settings: Settings, name: str) -> None:
    """Revoke a token: it is refused from the next request on."""
    from recsys import tokens

    tokens.revoke(_open(settings), name)
    click.echo(f"revoked token {name!r}")


@cli.command()
@click.option("--catalog", type=click.Path(exists=True), help="Catalogue to use instead of data/.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Start the web page at the end.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port of the web page.")
@_settings_options
def demo(settings: Settings, catalog, quiet: bool, serve: bool, port: int) -> None:
    """Ingest and embed the bundled photos, show similar items and recommendations, then serve."""
    from recsys.catalog import ingest as run_ingest
    from recsys.embedders.runner import embed_missing
    from recsys.evaluate import knn_accuracy as measure
    from recsys.recommend import Recommender

    source = Path(catalog) if catalog else BUNDLED_CATALOG
    if not source.exists():
        raise RecsysError(f"bundled catalogue not found at {source}; pass --catalog PATH")
    ws = _open(settings)
    click.echo(f"workspace: {ws.home.resolve()}")
    report = run_ingest(ws, source, progress=not quiet)
    click.echo(f"ingested {report.added} new, {report.already_present} already present")
    emb = embed_missing(ws, progress=not quiet)
    click.echo(f"embedded {emb.embedded} new item(s) ({emb.images_per_second:.1f} images/s)")
    from sqlalchemy import func, select

    from recsys import store

    rec = Recommender(ws, log=None)
    vectors, labels = rec.labelled_vectors()
    if len(labels) > 1:
        click.echo(f"1-NN same-label accuracy: {measure(vectors, labels)['accuracy']:.3f}")
    with ws.session() as session:
        firsts = (
            session.execute(
                select(func.min(store.Item.key)).group_by(store.Item.label).order_by(store.Item.label)
            )
            .scalars()
            .all()
        )
    for key in firsts[:2]:
        click.echo(f"\nmost similar to {key}:")
        _print_hits(rec.similar(key, 5), as_json=False)
    tulips = [k for k in firsts if k.startswith("tulip/")] or firsts[:1]
    views = tulips + [h.key for h in rec.similar(tulips[0], 2)]
    for key in views:
        rec.record("demo-user", key, event_key=f"demo:{key}")
    result = rec.recommend("demo-user", 8)
    click.echo(f"\ndemo-user viewed {', '.join(views)}; more like that history:")
    rows = [
        {
            "rank": n,
            "score": f"{r.score:.3f}",
            "key": r.key,
            "label": r.label or "",
            "because you viewed": r.because,
        }
        for n, r in enumerate(result.items, 1)
    ]
    click.echo(_table(rows, ["rank", "score", "key", "label", "because you viewed"]))
    from recsys.simulate import SimulationConfig, simulate

    sim = simulate(ws, SimulationConfig(users=40, events_per_user=20, seed=0), progress=False)
    click.echo(f"\nsimulated {sim['users']} users ({sim['stored']} new events; synthetic) for the web page")
    if serve:
        from recsys import tokens

        if any(t.name == "demo" for t in tokens.list_tokens(ws)):
            tokens.revoke(ws, "demo")  # tokens are shown once: a new one for this run
        secret = tokens.create(ws, "demo", "write")
        click.echo(
            f"\nAPI token (write scope, named 'demo'): {secret}\n"
            f"  curl -H 'Authorization: Bearer {secret}' "
            f"'http://127.0.0.1:{port}/api/users/demo-user/recommendations?k=5'"
        )
        _serve(settings, "127.0.0.1", port, demo=True)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RecsysError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OperationalError as exc:  # the database is unreachable, locked for too long, or full
        detail = str(exc.orig or exc).strip().splitlines()[0]
        click.echo(f"error: database: {detail}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
