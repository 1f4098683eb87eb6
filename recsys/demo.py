"""`recsys demo`'s setup: the bundled photos ingested and embedded, a user with a taste, simulated
visitors for the page, and a fresh API token. The command prints each step's result."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from recsys import queries, store, tokens
from recsys.catalog import IngestReport, ingest
from recsys.embedders.runner import EmbedReport, embed_missing
from recsys.errors import RecsysError
from recsys.serving.results import RecommendationList

#: The photos that ship with recsys (``data/flowers``: CC-BY, credits beside them).
BUNDLED_CATALOG = Path(__file__).resolve().parent.parent / "data" / "flowers"
#: The user whose views the demo records, and the token it makes.
USER = "demo-user"
#: Left out of the demo's evaluation: trained models that take most of a minute, and learn
#: little from its 40 simulated visitors (`recsys evaluate` compares them on real logs).
SLOW = ("sasrec", "hybrid")
TOKEN = "demo"


def catalogue(workspace, source: Path | None, progress: bool) -> tuple[IngestReport, EmbedReport]:
    """Ingest ``source`` (default: the bundled photos) and embed what has no vector yet."""
    source = source or BUNDLED_CATALOG
    if not source.exists():
        raise RecsysError(f"bundled catalogue not found at {source}; pass --catalog PATH")
    return ingest(workspace, source, progress=progress), embed_missing(workspace, progress=progress)


def showcase(workspace) -> list[str]:
    """The first item of each label: what the demo shows neighbours of."""
    return queries.first_key_per_label(workspace)


def seed_user(recommender, firsts: list[str]) -> tuple[list[str], RecommendationList]:
    """Record a few views for ``USER`` (a tulip and two look-alikes; once, whatever the reruns) and
    recommend from them."""
    tulips = [k for k in firsts if k.startswith("tulip/")] or firsts[:1]
    views = tulips + [h.key for h in recommender.similar(tulips[0], 2)]
    for key in views:
        recommender.record(USER, key, event_key=f"demo:{key}")
    return views, recommender.recommend(USER, 8)


def visitors(workspace) -> dict:
    """Simulated visitors (synthetic logs), so the page has people and popular items.

    Their sessions fall in the two months before the workspace's first item was added: recent, as
    the dashboard shows them, and the same on every run (the events are stored once)."""
    from recsys.simulate import SimulationConfig, simulate

    first = queries.first_item_added(workspace) or store.utcnow()
    start = first.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=60)
    return simulate(
        workspace, SimulationConfig(users=40, events_per_user=20, seed=0, start=start), progress=False
    )


def evaluate(workspace) -> dict:
    """Evaluate the strategies (but the ``SLOW`` ones) on the demo's logs (each user's latest 20%
    held out) so that ``auto`` serves a measured choice; a winner that serves from a saved model
    is trained on every event. Returns what ``auto`` serves now, and why."""
    from recsys import evaluate as offline
    from recsys import strategies, training
    from recsys.recommend import Recommender

    rec = Recommender(workspace, use_index=False, log=None, impressions=None)
    names = tuple(n for n in offline.plan(rec, offline.Plan())[1] if n not in SLOW)
    report = offline.run(rec, offline.Plan(ks=(10, 20, 50), bootstrap=200, strategies=names))
    best = max(report.strategies, key=lambda r: r.mean("recall@10"))
    if strategies.get(best.name).needs_model:
        training.train_peer(rec, best.name, log=lambda _: None)
    return Recommender(workspace, log=None, impressions=None).selection.auto_choice()


def fresh_token(workspace) -> str:
    """A new write token named ``TOKEN`` (tokens are shown once: each run makes its own)."""
    if any(t.name == TOKEN for t in tokens.list_tokens(workspace)):
        tokens.revoke(workspace, TOKEN)
    return tokens.create(workspace, TOKEN, "write")
