"""Model commands: simulate logs, train, fine-tune embedders, evaluate."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from recsys.cli.common import emit_json, open_workspace, settings_options, table
from recsys.errors import RecsysError
from recsys.settings import Settings


@click.command("simulate")
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
@settings_options
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
            Recommender(open_workspace(settings, needs_items=True), log=None),
            OnlineConfig(users=users, seed=seed, sessions=sessions),
            progress=not quiet and not as_json,
        )
        if as_json:
            emit_json(result)
        else:
            arms = ", ".join(f"{arm} {n}" for arm, n in result["users_per_arm"].items())
            click.echo(
                f"{result['users']} simulated visitors saw {result['lists']} lists "
                f"({result['impressions']} impressions) and clicked {result['clicks']} times"
                + (f"; experiment {result['experiment']}: {arms}" if result["experiment"] else "")
            )
        return
    result = simulate(
        open_workspace(settings, needs_items=True),
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
        emit_json(result)
    else:
        click.echo(
            f"simulated {result['users']} users, {result['events']} events "
            f"({result['stored']} stored, {result['duplicates']} already there); these logs are synthetic"
        )


@click.command("train")
@click.option(
    "--strategy",
    type=click.Choice(["two-tower", "hybrid", "ease", "ease-recency", "als", "transitions", "sasrec"]),
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
    "--split",
    "holdout_split",
    type=click.Choice(["temporal", "global-time"]),
    help="The `evaluate --split` the holdout is kept out for [temporal].",
)
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
@settings_options
def train_cmd(
    settings: Settings,
    strategy: str,
    holdout,
    holdout_split,
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
    """Train a model on the interaction logs (the two-tower, the hybrid, or a peer); saves a new version."""
    from recsys import training

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
        from recsys.recommend import Recommender

        notes = None if as_json else sys.stderr  # what long fits say (epochs, chosen settings)
        rec = Recommender(open_workspace(settings, needs_items=True), use_index=False, log=notes)
        report = training.train_peer(
            rec, strategy, holdout=holdout or 0.0, split=holdout_split or "temporal", seed=seed or 0, log=log
        )
        if as_json:
            emit_json(report)
        else:
            click.echo(
                f"saved {strategy} v{report['version']} ({report['seconds']:.1f} s): {report['params']}"
            )
        return
    config = training.two_tower_config(
        epochs=epochs,
        dim=dim,
        val_fraction=val_fraction,
        batch_size=train_batch,
        holdout=holdout,
        split=holdout_split,
        cold_share=cold_share,
        seed=seed,
        history_ids=history_ids,
        id_dropout=id_dropout,
        user_ids=user_ids or None,
    )
    from recsys.twotower.train import train

    report = train(open_workspace(settings, needs_items=True), config, warm_start=warm, log=log)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(
            f"saved two-tower v{report.version} in {report.path} ({report.seconds:.1f} s, "
            f"best epoch {report.best_epoch})"
        )


@click.command("evaluate")
@click.option("--strategy", "strategies", multiple=True, help="Strategy to compare (repeatable) [all].")
@click.option("--k", "ks", type=int, multiple=True, help="Cut-offs (repeatable) [10 20 50 100].")
@click.option(
    "--split",
    type=click.Choice(["temporal", "global-time", "random", "cold-items"]),
    default="temporal",
    show_default=True,
    help="Hold out each user's latest interactions, every event from one moment on, a random "
    "share, or every event on new items.",
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
@click.option(
    "--seed",
    "seed_text",
    default="0",
    show_default=True,
    help="Seed of the split, the models and the bootstrap; several (0,1,2): one evaluation each, "
    "and their means.",
)
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap samples.")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Write metrics.json/.csv and a plot."
)
@click.option("--embeddings", is_flag=True, help="Also report the k-NN label accuracy of the vectors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@settings_options
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
    seed_text,
    bootstrap,
    out_dir,
    embeddings: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Compare strategies on held-out events: recall, NDCG, MAP... with bootstrap intervals."""
    from recsys import evaluate, seeds
    from recsys.metrics import knn_accuracy
    from recsys.recommend import Recommender

    seed_list = seeds.parse_seeds(seed_text)
    seed = seed_list[0]

    asked = evaluate.Plan(
        split=split,
        holdout=holdout,
        last_n=last_n,
        min_events=min_events,
        cold_share=cold_share,
        seed=seed,
        users=max_users,
        strategies=tuple(strategies),
        ks=tuple(ks) or evaluate.DEFAULT_KS,
        bootstrap=bootstrap,
    )
    rec = Recommender(open_workspace(settings, needs_items=True), use_index=False, log=None)
    if len(seed_list) > 1:
        _evaluate_seeds(rec, asked, seed_list, out_dir, as_json, quiet)
        return
    report = evaluate.run(
        rec,
        asked,
        progress=not quiet and not as_json,
        log=None if as_json or quiet else functools.partial(click.echo, err=True),
        note=lambda message: click.echo(f"note: {message}", err=True),
    )
    if embeddings:
        vectors, labels = rec.vectors.labelled()
        report.embeddings = knn_accuracy(vectors, labels) if len(labels) > 1 else None
    if out_dir:
        evaluate.write_files(report, Path(out_dir))
    if as_json:
        emit_json(report.as_dict())
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
        cells = [
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
        click.echo(table(cells, list(cells[0])))
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


def _evaluate_seeds(rec, asked, seed_list, out_dir, as_json: bool, quiet: bool) -> None:
    """`recsys evaluate --seed 0,1,2`: each seed's evaluation, then the means over seeds."""
    from recsys import atomic, evaluate, seeds

    say = functools.partial(click.echo, err=True)
    result = seeds.run(
        rec,
        asked,
        seed_list,
        progress=not quiet and not as_json,
        log=None if as_json or quiet else say,
        note=lambda message: say(f"note: {message}"),
    )
    summary = result.as_dict()
    if out_dir:
        for seed, report in zip(seed_list, result.reports, strict=True):
            evaluate.write_files(report, Path(out_dir) / f"seed-{seed}")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic.write_text(Path(out_dir) / "seeds.json", json.dumps(summary, indent=2, default=str))
    if as_json:
        emit_json(summary)
        return
    first = result.reports[0]
    click.echo(
        f"{len(first.users)} users evaluated ({first.split} split), catalogue {first.catalogue_size} "
        f"items, seeds {','.join(map(str, seed_list))} (evaluations "
        f"{', '.join(str(r.evaluation_id) for r in result.reports)}), {summary['seconds']:.1f} s"
    )
    cells = [
        {
            "strategy": r["strategy"],
            "recall@10 mean [min, max]": f"{r['recall']:.4f} [{r['recall_min']:.4f}, {r['recall_max']:.4f}]",
            "ndcg@10 mean [min, max]": f"{r['ndcg']:.4f} [{r['ndcg_min']:.4f}, {r['ndcg_max']:.4f}]",
            "by seed": " ".join(f"{v:.4f}" for v in r["recall_by_seed"]),
            "minus the best [95% CI]": (
                f"{r['minus_best']['mean_difference']:+.4f} [{r['minus_best']['ci95'][0]:+.4f}, "
                f"{r['minus_best']['ci95'][1]:+.4f}]"
                if "minus_best" in r
                else ""
            ),
            "note": "" if r["ranks_new_items"] else "cannot rank new items (no interactions)",
        }
        for r in summary["summary"]
    ]
    click.echo(table(cells, list(cells[0])))
    c = result.comparison
    if c:
        click.echo(
            f"\npaired ({c['metric']}): {c['better']} - {c['worse']} = {c['mean_difference']:+.4f} "
            f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}], p = {c['p_value']:.4f}; "
            f"{c['users_better']} users better, {c['users_worse']} worse"
        )
    if out_dir:
        click.echo(f"wrote {out_dir}/seeds.json and seed-N/ for each seed")


@click.command("finetune")
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
@settings_options
def finetune_cmd(settings: Settings, mode, as_json: bool, quiet: bool, batch_size, **options) -> None:
    """Train Lite0 further on your labels or interactions; register the result as a new model."""
    from recsys.finetune import FinetuneConfig, finetune

    if mode is None:
        raise RecsysError("say what to train for: --labels or --interactions")
    config = FinetuneConfig(mode=mode, batch_size=batch_size, **options)
    report = finetune(
        open_workspace(settings, needs_items=True), config, log=None if (quiet or as_json) else click.echo
    )
    if as_json:
        emit_json(report.as_dict())
    else:
        if report.best_epoch == 0:
            click.echo("no epoch beat the frozen model: the registered model is the frozen one")
        click.echo(
            f"registered {report.model}: {report.metric} {report.frozen_accuracy:.4f} frozen -> "
            f"{report.finetuned_accuracy:.4f} (epoch {report.best_epoch}) in {report.seconds:.0f} s; "
            f"`recsys embed --model {report.model}` re-embeds the catalogue with it"
        )
