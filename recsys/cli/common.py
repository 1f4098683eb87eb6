"""What every command shares: the workspace options, opening the workspace, and output."""

from __future__ import annotations

import functools
import json
import sys

import click

from recsys.settings import Settings


def settings_options(fn):
    """--home, --db and --model on every command; values left unset fall back to RECSYS_*."""

    @click.option("--home", type=click.Path(file_okay=False), help="Workspace folder [RECSYS_HOME].")
    @click.option("--db", "db_url", help="SQLAlchemy database URL [RECSYS_DB_URL].")
    @click.option("--model", help="Embedding model [RECSYS_MODEL], e.g. efficientnet-lite0.")
    @functools.wraps(fn)
    def wrapper(home, db_url, model, **kwargs):
        settings = Settings.from_env(home=home, db_url=db_url, model=model)
        return fn(settings, **kwargs)

    return wrapper


def open_workspace(settings: Settings, migrate: bool = True, *, needs_items: bool = False):
    """The command's workspace; its connections are closed when the command ends (also in-process).

    ``needs_items``: the command has nothing to work on in an empty workspace, and says which one
    it opened (a new one, when run from another folder) and how to point at another."""
    from recsys.workspace import Workspace

    workspace = Workspace(settings, migrate=migrate)
    click.get_current_context().call_on_close(workspace.close)
    if needs_items:
        workspace.require_items()
    return workspace


def problem_printer(verb: str = "skipped"):
    """Print "<verb> <where>: <reason>" on stderr, each on a line of its own beside a progress bar."""

    def show(where: str, reason: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"{verb} {where}: {reason}", file=sys.stderr)

    return show


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    head = "  ".join(c.ljust(widths[c]) for c in columns)
    body = ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([head, "  ".join("-" * widths[c] for c in columns), *body])


def print_hits(hits, as_json: bool) -> None:
    rows = [
        {"rank": n, "score": f"{h.score:.4f}", "key": h.key, "label": h.label or "", "title": h.display_title}
        for n, h in enumerate(hits, 1)
    ]
    if as_json:
        emit_json([h.as_dict() for h in hits])
    else:
        click.echo(table(rows, ["rank", "score", "key", "label", "title"]))
