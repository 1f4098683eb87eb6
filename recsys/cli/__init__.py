"""``recsys`` command line: thin shells over the library, in command groups (``catalogue``,
``models``, ``serving``, ``admin``), wired here.

Every command takes ``--home`` / ``--db`` (or ``RECSYS_HOME`` / ``RECSYS_DB_URL``); bad input ends
in one ``error: ...`` line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys

import click
from sqlalchemy.exc import OperationalError

from recsys.cli import admin, catalogue, models, serving
from recsys.errors import RecsysError


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


for command in (
    catalogue.ingest,
    catalogue.ingest_movielens_cmd,
    catalogue.embed,
    catalogue.similar,
    catalogue.knn_accuracy,
    catalogue.index_cmd,
    catalogue.cluster_cmd,
    catalogue.export_static_cmd,
    serving.record_cmd,
    serving.recommend_cmd,
    serving.serve_cmd,
    serving.demo,
    models.simulate_cmd,
    models.train_cmd,
    models.evaluate_cmd,
    models.finetune_cmd,
    admin.db,
    admin.token,
    admin.experiment,
    admin.impressions,
    admin.doctor_cmd,
):
    cli.add_command(command)


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
