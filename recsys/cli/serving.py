"""Serving commands: record events, recommend, serve the page, and the demo."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.cli.common import emit_json, open_workspace, print_hits, problem_printer, settings_options, table
from recsys.errors import RecsysError
from recsys.settings import Settings


@click.command("record")
@click.option("--user", help="User key (created on first sight).")
@click.option("--item", help="Item key.")
@click.option("--event", default="view", show_default=True, help="view, click, like or purchase.")
@click.option("--at", "at", help="When (ISO-8601 or Unix seconds); default now.")
@click.option("--weight", type=float, help="Weight in the profile (default: by event type).")
@click.option("--event-key", help="Idempotency key: the same key is stored once.")
@click.option("--request-id", help="The request_id of the list the click came from (attributes it).")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(),
    help="Bulk: a CSV of user,item,event,timestamp[,weight[,event_key]].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@settings_options
def record_cmd(
    settings: Settings, user, item, event, at, weight, event_key, request_id, csv_path, as_json: bool
) -> None:
    """Record one interaction, or a CSV of them (bad rows reported, valid rows kept)."""
    from recsys.interactions import import_csv
    from recsys.recommend import Recommender

    if bool(csv_path) == bool(user or item):
        raise RecsysError("give either --user and --item, or --csv FILE")
    ws = open_workspace(settings, needs_items=True)
    if csv_path:
        report = import_csv(ws, csv_path, on_problem=problem_printer("rejected"))
    else:
        if not (user and item):
            raise RecsysError("--user and --item are both required")
        report = Recommender(ws, log=None).record(user, item, event, at, weight, event_key, request_id)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(
            f"stored {report.stored} event(s), {report.duplicates} duplicate(s), "
            f"{len(report.rejected)} rejected"
        )
    if report.stored == 0 and report.rejected:
        raise RecsysError("no event could be stored")


@click.command("recommend")
@click.option("--user", required=True, help="User key.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many items.")
@click.option(
    "--strategy",
    default="auto",
    show_default=True,
    help="auto (the evaluated best), hybrid, two-tower, average, popular, random, ease, ease-recency, "
    "als, transitions, sasrec.",
)
@click.option("--model-version", type=int, help="Two-tower version (default: the latest).")
@click.option("--diversify", is_flag=True, help="Re-rank with maximal marginal relevance.")
@click.option("--lambda", "mmr_lambda", type=float, help="MMR relevance weight, 0..1 [0.7].")
@click.option("--label", "labels", multiple=True, help="Only items with this label (repeatable).")
@click.option("--exclude-label", "exclude_labels", multiple=True, help="Never items with this label.")
@click.option("--half-life", "half_life", type=float, help="Recency half-life of events, in days.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
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

    rec = Recommender(open_workspace(settings, needs_items=True))
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
        emit_json(result.as_dict())
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
    click.echo(table(rows, ["rank", "score", "key", "label", "because you viewed"]))


@click.command("serve")
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
@settings_options
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

    host = host.strip("[]")  # ::1 and [::1] alike; the server puts the brackets where they go
    for flag, on in (("--demo", demo), ("--debug", debug)):
        if on and not _is_loopback(host):
            raise RecsysError(f"{flag} serves on loopback only (127.0.0.1, ::1), not on {host!r}")
    server.run(settings, host, port, server.plan(workers, threads, debug), demo=demo, echo=click.echo)


@click.command()
@click.option("--catalog", type=click.Path(exists=True), help="Catalogue to use instead of data/.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Start the web page at the end.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port of the web page.")
@settings_options
def demo(settings: Settings, catalog, quiet: bool, serve: bool, port: int) -> None:
    """Ingest and embed the bundled photos, show similar items and recommendations, then serve."""
    from recsys import demo as setup
    from recsys.metrics import knn_accuracy
    from recsys.recommend import Recommender

    if serve:  # a port in use is said now, not after the set-up
        from web.server import check_port

        check_port("127.0.0.1", port)
    ws = open_workspace(settings)
    click.echo(f"workspace: {ws.home.resolve()}")
    report, emb = setup.catalogue(ws, Path(catalog) if catalog else None, progress=not quiet)
    click.echo(f"ingested {report.added} new, {report.already_present} already present")
    click.echo(f"embedded {emb.embedded} new item(s) ({emb.images_per_second:.1f} images/s)")
    rec = Recommender(ws, log=None)
    vectors, labels = rec.vectors.labelled()
    if len(labels) > 1:
        click.echo(f"1-NN same-label accuracy: {knn_accuracy(vectors, labels)['accuracy']:.3f}")
    firsts = setup.showcase(ws)
    for key in firsts[:2]:
        click.echo(f"\nmost similar to {key}:")
        print_hits(rec.similar(key, 5), as_json=False)
    views, result = setup.seed_user(rec, firsts)
    click.echo(f"\n{setup.USER} viewed {', '.join(views)}; more like that history:")
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
    click.echo(table(rows, ["rank", "score", "key", "label", "because you viewed"]))
    sim = setup.visitors(ws)
    click.echo(f"\nsimulated {sim['users']} users ({sim['stored']} new events; synthetic) for the web page")
    choice = setup.evaluate(ws)
    click.echo(f"evaluated the strategies on them: auto serves {choice['strategy']} ({choice['reason']})")
    if serve:
        secret = setup.fresh_token(ws)
        click.echo(
            f"\nAPI token (write scope, named '{setup.TOKEN}'): {secret}\n"
            f"  curl -H 'Authorization: Bearer {secret}' "
            f"'http://127.0.0.1:{port}/api/users/{setup.USER}/recommendations?k=5'"
        )
        _serve(settings, "127.0.0.1", port, demo=True)
