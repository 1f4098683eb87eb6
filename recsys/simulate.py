"""Synthetic but believable interaction logs for a labelled catalogue (documented as synthetic).

Each user has a taste over labels drawn from a Dirichlet; it drifts from session to session.
Within a label, items follow a Zipf popularity skew (one shared order: some photos are simply
more popular), and, when the catalogue is embedded, a visual taste: each user favours the look of
one photo per label (an anchor), choosing items in proportion to popularity x exp(similarity to
the anchor / ``visual_temperature``); the anchors stay while the label tastes drift. Users come back in
sessions days apart and view a few items minutes apart; some views become clicks or likes.
Everything is written through the same recording path as ``recsys record``
(``recsys.interactions.record``), with idempotency keys, so re-running a seed stores nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select

from recsys import store
from recsys.errors import RecsysError
from recsys.interactions import NewEvent, record


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulated population.

    Attributes:
        users: How many users.
        events_per_user: Events each user makes.
        seed: Everything random derives from it.
        concentration: Dirichlet alpha of tastes over labels; small = focused users.
        drift: Share of the taste replaced by a fresh draw at each new session.
        zipf: Exponent of the popularity skew inside a label.
        session_length: Mean events per session.
        visual_temperature: How sharply users prefer items that look like their anchor; 0 turns
            the visual taste off (label and popularity only).
        start: Time of the first session.
    """

    users: int = 100
    events_per_user: int = 30
    seed: int = 0
    concentration: float = 0.3
    drift: float = 0.15
    zipf: float = 0.8
    session_length: float = 6.0
    visual_temperature: float = 0.05
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)


def generate(
    items: list[tuple[str, str | None]], config: SimulationConfig, vectors: np.ndarray | None = None
) -> list[NewEvent]:
    """Events for ``items`` (key, label) with optional unit ``vectors`` (one row per item); pure."""
    rng = np.random.default_rng(config.seed)
    labels = sorted({label for _, label in items if label is not None})
    if not labels:
        raise RecsysError("simulate needs a labelled catalogue (folder sub-folders or a label column)")
    by_label = {label: [key for key, lab in items if lab == label] for label in labels}
    rows_of = {label: np.array([i for i, (_, lab) in enumerate(items) if lab == label]) for label in labels}
    visual = vectors is not None and config.visual_temperature > 0
    label_vectors = {label: vectors[rows] for label, rows in rows_of.items()} if visual else {}
    looks: dict[int, np.ndarray] = {}  # anchor row -> how much each photo of its label looks like it
    popularity = {}
    for label, keys in by_label.items():
        order = rng.permutation(len(keys))  # which photo is the most popular is itself random
        weights = 1.0 / np.arange(1, len(keys) + 1) ** config.zipf
        probs = np.empty(len(keys))
        probs[order] = weights / weights.sum()
        popularity[label] = probs
    events: list[NewEvent] = []
    for u in range(config.users):
        user = f"sim-{config.seed}-{u:05d}"
        taste = rng.dirichlet([config.concentration] * len(labels))
        anchors = {label: rng.choice(rows_of[label]) for label in labels}
        unseen: dict[str, np.ndarray] = {}  # per label: the photos this user has not viewed yet
        when = config.start + timedelta(days=float(rng.exponential(10.0)))
        left_in_session = 1 + rng.poisson(config.session_length - 1)
        for n in range(config.events_per_user):
            if left_in_session == 0:
                taste = (1 - config.drift) * taste + config.drift * rng.dirichlet(
                    [config.concentration] * len(labels)
                )
                when += timedelta(days=float(rng.exponential(3.0)))
                left_in_session = 1 + rng.poisson(config.session_length - 1)
            label = labels[rng.choice(len(labels), p=taste)]
            keys, probs = by_label[label], popularity[label]
            if label not in unseen:
                unseen[label] = np.ones(len(keys), dtype=bool)
            if not unseen[label].any():
                continue
            p = probs * unseen[label]
            if visual:
                anchor = int(anchors[label])
                if anchor not in looks:  # shared by every user with this anchor
                    sims = label_vectors[label] @ vectors[anchor]
                    looks[anchor] = np.exp((sims - sims.max()) / config.visual_temperature)
                p = p * looks[anchor]
            picked = rng.choice(len(keys), p=p / p.sum())
            key = keys[picked]
            unseen[label][picked] = False
            kind = rng.choice(["view", "click", "like"], p=[0.75, 0.15, 0.10])
            when += timedelta(seconds=float(rng.exponential(90.0)))
            events.append(NewEvent(user, key, str(kind), when, None, f"sim:{config.seed}:{u}:{n}"))
            left_in_session -= 1
    return events


def _catalogue(workspace) -> tuple[list, np.ndarray | None]:
    """(id, key, label) of every item, and their vectors in the retrieval space (centred, so
    "looks like" means what sets photos apart), or None unless every item is embedded."""
    with workspace.session() as session:
        items = session.execute(
            select(store.Item.id, store.Item.key, store.Item.label).order_by(store.Item.id)
        ).all()
        ids, matrix = store.load_embeddings(session, workspace.settings.model)
    if not items:
        raise RecsysError("the catalogue is empty: run `recsys ingest` first")
    if len(ids) != len(items):
        return items, None
    from recsys.space import center_and_normalise

    return items, center_and_normalise(matrix, matrix.mean(axis=0))


def simulate(workspace, config: SimulationConfig, *, progress: bool = True) -> dict:
    """Generate and store a population's events; returns counts."""
    from tqdm import tqdm

    items, vectors = _catalogue(workspace)
    if config.visual_temperature <= 0:
        vectors = None
    events = generate([(k, lab) for _, k, lab in items], config, vectors)
    stored = duplicates = 0
    batch = 2000
    for start in tqdm(range(0, len(events), batch), desc="simulate", unit="batch", disable=not progress):
        report = record(workspace, events[start : start + batch])
        stored += report.stored
        duplicates += report.duplicates
    return {
        "users": config.users,
        "events": len(events),
        "stored": stored,
        "duplicates": duplicates,
        "visual_tastes": vectors is not None,
    }


# -- online: simulated visitors browse the served lists ---------------------------------------


@dataclass(frozen=True)
class OnlineConfig:
    """Knobs of the simulated visitors.

    Attributes:
        users: How many visitors (``online-<seed>-<n>``; a new run is new traffic).
        seed: Everything random derives from it.
        sessions: Lists each visitor is shown (each after the clicks on the previous one).
        k: Items per list.
        concentration: Dirichlet alpha of tastes over labels; small = focused visitors.
        click_rate: Chance of clicking a perfect fit in the first position.
        sharpness: How much the look matters: the chance scales with closeness ** sharpness,
            closeness being the item's rank (0..1) by similarity to the visitor's favourite
            photo of its label.
    """

    users: int = 200
    seed: int = 0
    sessions: int = 5
    k: int = 10
    concentration: float = 0.3
    click_rate: float = 0.6
    sharpness: float = 2.0


class _Visitor:
    """One simulated visitor's taste: how much they like each label, and the look they favour."""

    def __init__(self, rng, labels: list[str], rows_of: dict[str, np.ndarray], vectors, alpha: float):
        self.taste = dict(zip(labels, rng.dirichlet([alpha] * len(labels)), strict=True))
        self.anchors = {label: int(rng.choice(rows_of[label])) for label in labels}
        self._closeness: dict[str, dict[int, float]] = {}
        self._rows_of, self._vectors = rows_of, vectors

    def favourite(self) -> int:
        """The row of the photo they arrive at: their favourite of the label they like most."""
        return self.anchors[max(self.taste, key=self.taste.get)]

    def fit(self, row: int, label: str | None, sharpness: float) -> float:
        """0..1: how well an item fits (label share relative to their top label, times the look)."""
        if label not in self.taste:
            return 0.0
        share = self.taste[label] / max(self.taste.values())
        if self._vectors is None:
            return share
        if label not in self._closeness:  # rank of each photo of the label by likeness to the anchor
            rows = self._rows_of[label]
            sims = self._vectors[rows] @ self._vectors[self.anchors[label]]
            ranks = np.argsort(np.argsort(sims)) / max(len(rows) - 1, 1)
            self._closeness[label] = dict(zip(rows.tolist(), ranks.tolist(), strict=True))
        return share * self._closeness[label].get(row, 0.0) ** sharpness


def simulate_online(recommender, config: OnlineConfig, *, progress: bool = True) -> dict:
    """Visitors arrive at a photo they like, then are shown ``sessions`` lists through
    ``Recommender.recommend`` (the page's and the API's path: ``auto``, experiments, impressions)
    and click what fits their taste, each click carrying the list's ``request_id``."""
    from tqdm import tqdm

    workspace = recommender.workspace
    if config.users < 1 or config.sessions < 1 or config.k < 1:
        raise RecsysError("--users, --sessions and k must be at least 1")
    items, vectors = _catalogue(workspace)
    labels = sorted({label for _, _, label in items if label is not None})
    if not labels:
        raise RecsysError("simulate needs a labelled catalogue (folder sub-folders or a label column)")
    row_of = {item_id: n for n, (item_id, _, _) in enumerate(items)}
    rows_of = {lab: np.array([n for n, (_, _, la) in enumerate(items) if la == lab]) for lab in labels}
    rng = np.random.default_rng(config.seed)
    lists = clicks = 0
    shown: set[tuple[str, int]] = set()  # impressions as the experiment report counts them: (person, item)
    arms: dict[str, int] = {}
    for u in tqdm(range(config.users), desc="online", unit="user", disable=not progress):
        user = f"online-{config.seed}-{u:05d}"
        visitor = _Visitor(rng, labels, rows_of, vectors, config.concentration)
        recommender.record(user, items[visitor.favourite()][1], "view")
        for session_n in range(config.sessions):
            result = recommender.recommend(user, config.k)
            lists += 1
            shown.update((user, item.item_id) for item in result.items)
            if result.arm is not None and session_n == 0:
                arms[result.arm] = arms.get(result.arm, 0) + 1
            for position, item in enumerate(result.items):
                chance = config.click_rate * visitor.fit(row_of[item.item_id], item.label, config.sharpness)
                if rng.random() < chance / np.log2(position + 2):  # lower in the list, seen less
                    recommender.record(user, item.key, "click", request_id=result.request_id)
                    clicks += 1
    experiment = recommender.selection.experiment()
    return {
        "users": config.users,
        "lists": lists,
        "impressions": len(shown),
        "clicks": clicks,
        "ctr": clicks / len(shown) if shown else None,
        "experiment": experiment.name if experiment is not None else None,
        "users_per_arm": arms,
        "visual_tastes": vectors is not None,
    }
