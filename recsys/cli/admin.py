"""Administration: the schema, API tokens, experiments, impressions, and the doctor."""

from __future__ import annotations

import click

from recsys.cli.common import emit_json, open_workspace, settings_options, table
from recsys.errors import RecsysError
from recsys.settings import Settings

# --- db --------------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@settings_options
def db_upgrade(settings: Settings, revision: str) -> None:
    """Migrate the database up to REVISION (default: newest)."""
    from recsys import store

    ws = open_workspace(settings, migrate=False)
    click.echo(f"database at revision {store.migrate(ws.engine, revision)}")


@db.command("downgrade")
@click.argument("revision")
@settings_options
def db_downgrade(settings: Settings, revision: str) -> None:
    """Migrate the database down to REVISION ('base' drops everything)."""
    from recsys import store

    ws = open_workspace(settings, migrate=False)
    click.echo(f"database at revision {store.migrate(ws.engine, revision, downgrade=True)}")


@db.command("current")
@settings_options
def db_current(settings: Settings) -> None:
    """Print the database's schema revision and the newest one."""
    from recsys import store

    ws = open_workspace(settings, migrate=False)
    click.echo(f"current {store.current_revision(ws.engine)}  head {store.head_revision()}")


# --- API tokens -------------------------------------------------------------------------------


@click.group()
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
@settings_options
def token_create(settings: Settings, name: str, scope: str, as_json: bool) -> None:
    """Make a token and print it (the last line; it is not shown again)."""
    from recsys import tokens

    secret = tokens.create(open_workspace(settings), name, scope)
    if as_json:
        emit_json({"name": name, "token": secret, "scope": scope})
    else:
        click.echo(f"token {name!r} ({scope}); keep it now, it is not shown again:", err=True)
        click.echo(secret)


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def token_list(settings: Settings, include_revoked: bool, as_json: bool) -> None:
    """List tokens (names and scopes; the tokens themselves are not stored)."""
    from recsys import tokens

    found = [
        t.as_dict() for t in tokens.list_tokens(open_workspace(settings), include_revoked=include_revoked)
    ]
    if as_json:
        emit_json(found)
    elif found:
        click.echo(table(found, ["name", "scope", "created_at", "revoked_at"]))
    else:
        click.echo("no tokens yet: recsys token create NAME --scope read|write")


@token.command("revoke")
@click.argument("name")
@settings_options
def token_revoke(settings: Settings, name: str) -> None:
    """Revoke a token: it is refused from the next request on."""
    from recsys import tokens

    tokens.revoke(open_workspace(settings), name)
    click.echo(f"revoked token {name!r}")


@click.group()
def experiment() -> None:
    """A/B experiments: split `auto` traffic between strategies and compare click-through rates."""


@experiment.command("start")
@click.argument("name")
@click.option(
    "--strategies", "arms", required=True, help="Comma-separated arms, control first: popular,average."
)
@click.option("--split", help="Percent per arm, e.g. 50,50 [even].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def experiment_start(settings: Settings, name: str, arms: str, split, as_json: bool) -> None:
    """Start NAME: from now on `auto` serves each user their arm (assigned by a hash, never switched)."""
    from recsys import experiments

    names = [a.strip() for a in arms.split(",") if a.strip()]
    started = experiments.start(
        open_workspace(settings), name, names, experiments.parse_split(split, len(names))
    )
    if as_json:
        emit_json(started.as_dict())
    else:
        shares = ", ".join(f"{a} {s:g}%" for a, s in zip(started.strategies, started.split, strict=True))
        click.echo(f"experiment {started.name} started: {shares}")


@experiment.command("stop")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def experiment_stop(settings: Settings, name: str, as_json: bool) -> None:
    """Stop NAME: `auto` serves the evaluated best again; impressions and clicks are kept."""
    from recsys import experiments

    stopped = experiments.stop(open_workspace(settings), name)
    if as_json:
        emit_json(stopped.as_dict())
    else:
        click.echo(f"experiment {stopped.name} stopped at {stopped.stopped_at:%Y-%m-%d %H:%M:%S} UTC")


@experiment.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def experiment_list(settings: Settings, as_json: bool) -> None:
    """Every experiment, newest first."""
    from recsys import experiments

    found = [e.as_dict() for e in experiments.all_experiments(open_workspace(settings))]
    if as_json:
        emit_json(found)
        return
    rows = [
        {**e, "strategies": ",".join(e["strategies"]), "state": "running" if e["running"] else "stopped"}
        for e in found
    ]
    click.echo(
        table(rows, ["name", "strategies", "state", "started_at", "stopped_at"])
        if rows
        else "no experiments yet"
    )


@experiment.command("report")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def experiment_report(settings: Settings, name: str, as_json: bool) -> None:
    """Per arm: users, impressions, clicks, CTR (95% interval); each arm against the first."""
    from recsys import experiments

    result = experiments.report(open_workspace(settings), name)
    if as_json:
        emit_json(result)
        return
    click.echo(experiments.format_report(result))


@click.group()
def impressions() -> None:
    """The log of what was shown."""


@impressions.command("prune")
@click.option("--older-than", "days", type=float, help="Days kept [RECSYS_IMPRESSION_RETENTION_DAYS, 90].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def impressions_prune(settings: Settings, days: float | None, as_json: bool) -> None:
    """Delete impressions older than the retention setting (clicks stay in the events)."""
    from recsys.impressions import prune

    days = settings.impression_retention_days if days is None else days
    deleted = prune(open_workspace(settings), days)
    if as_json:
        emit_json({"deleted": deleted, "older_than_days": days})
    else:
        click.echo(f"deleted {deleted} impressions older than {days:g} days")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def doctor_cmd(settings: Settings, as_json: bool) -> None:
    """Check the workspace (schema, image files, embeddings, index, models) and say how to repair it."""
    from recsys import store
    from recsys.doctor import diagnose

    ws = open_workspace(settings, migrate=False)
    if store.current_revision(ws.engine) is None:
        raise RecsysError(
            f"{ws.engine.url.render_as_string(hide_password=True)}: no recsys schema here; "
            "run `recsys db upgrade` or ingest"
        )
    findings = diagnose(ws)
    if as_json:
        emit_json([f.as_dict() for f in findings])
    else:
        for f in findings:
            click.echo(f"{'ok ' if f.ok else 'BAD'}  {f.check:15s} {f.detail}")
            if not f.ok:
                click.echo(f"     repair: {f.repair}")
    problems = [f for f in findings if not f.ok]
    if problems:
        raise RecsysError(f"{len(problems)} problem(s) found")
