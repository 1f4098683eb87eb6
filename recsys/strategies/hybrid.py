"""The served model: retrievers that each see one side of a person, and a ranker that weighs them.

Retrievers: what came next in other people's sequences (``transitions``), EASE read with recency
(``ease-recency``), the two-tower (its user tower, and the mean of the history's item vectors), and
the image profile. Each adds its best unseen items to a person's candidates, and new items (no
interactions) get slots of their own, chosen by picture. The ranker (``recsys.ranker``) scores
every candidate from all retrievers' scores and ranks, popularity, recency and newness.

It learns on validation events only: the retrievers are fitted on each user's training events
minus the latest 10%, and the ranker learns to put those latest 10% first. Those are also the
events the two-tower stops on. Serving then uses retrievers fitted on all training events (the
two-tower as trained), so the ranker sees the same kinds of scores it learned from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from recsys import ids as id_lookup
from recsys.errors import RecsysError
from recsys.events import History, item_sequence, recency_weights
from recsys.ranker import RankerConfig, build_lists
from recsys.splits import temporal_split
from recsys.strategies.base import Dense, Strategy
from recsys.strategies.ease_recency import EaseRecency
from recsys.strategies.transitions import Transitions
from recsys.strategies.two_tower import TwoTower

#: Retrievers fitted on the events (the two-tower and the image profile come on top).
RETRIEVERS = {"ease-recency": EaseRecency, "transitions": Transitions}
#: More retrievers: a tuned one with some hyper-parameters set otherwise (no tuning of their own).
VARIANTS = {
    "ease": ("ease-recency", {"half_life": 0.0}),  # who liked the same, whenever
    "next": ("transitions", {"window": 1, "half_life": 1.0}),  # what came right after the latest
}
#: Items of a history whose vectors make a profile, and their half-life (in items).
PROFILE_ITEMS, PROFILE_HALF_LIFE = 50, 5.0
#: What orders the new items' own slots.
PICTURE = "tower_profile"


def _profile_scores(histories: Sequence[History], ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(histories, items) cosine of each item to the recency-weighted mean of the history's vectors
    (``vectors`` by ``ids``, ascending; unit rows)."""
    profiles = np.zeros((len(histories), vectors.shape[1]), np.float32)
    for n, history in enumerate(histories):
        rows = id_lookup.positions(ids, item_sequence(history)[-PROFILE_ITEMS:])
        weights = recency_weights(len(rows), PROFILE_HALF_LIFE)[rows >= 0]
        if len(weights):
            mean = weights @ vectors[rows[rows >= 0]]
            profiles[n] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return profiles @ vectors.T


def _with_new_item_at(
    rows: np.ndarray, values: np.ndarray, pictures: Sequence[np.ndarray], fresh: np.ndarray, slot: int
) -> np.ndarray:
    """``values`` with a ``fresh`` candidate (by catalogue row) moved up to place ``slot`` (1-based)
    when the ranker placed it lower but its picture is among the person's ``slot`` best candidates
    by one of ``pictures`` (scores over the catalogue: the two-tower's profile, the image profile).
    """
    candidates = np.nonzero(fresh[rows])[0]
    if not len(candidates) or len(values) < slot:
        return values
    best, place = None, slot
    for picture in pictures:
        mine = candidates[np.argmax(picture[rows[candidates]])]
        above = int((picture[rows] > picture[rows[mine]]).sum())
        if above < place:
            best, place = mine, above
    order = np.argsort(-values, kind="stable")
    if best is None or int(np.nonzero(order == best)[0][0]) < slot:
        return values  # no arrival suits this person, or the ranker already shows it
    out = values.copy()
    below = values[order[slot - 1]]
    out[best] = (values[order[slot - 2]] + below) / 2 if slot > 1 else values[order[0]] + 1.0
    return out


class Hybrid(Strategy):
    name = "hybrid"
    needs_model = True
    needs_interactions = False
    bound_to_vectors = True
    files = (
        "hybrid.json",
        *(f"ranker{n}.weights.h5" for n in range(RankerConfig.folds)),
        "items.npz",
        *(f"two-tower/{f}" for f in ("weights.weights.h5", "item_ids.npy", "users.json", "config.json")),
        *(f"{name}/{f}" for name in ("ease-recency", "ease") for f in EaseRecency.files),
        *(f"{name}/{f}" for name in ("transitions", "next") for f in Transitions.files),
    )

    retrievers: dict | None = None
    tower: TwoTower | None = None
    rankers: list | None = None
    facts: dict | None = None
    played_new: np.ndarray | None = None  # item ids

    @property
    def config(self) -> RankerConfig:
        from dataclasses import fields

        known = {f.name for f in fields(RankerConfig)}
        return RankerConfig(**{k: v for k, v in self.params.items() if k in known})

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, train: Mapping[str, History]) -> Hybrid:
        from recsys.ranker.model import train_rankers

        config, log = self.config, self.context.log or (lambda _: None)
        seed = int(self.params.get("seed", 0))
        inner = temporal_split(train, fraction=0.1, min_events=3)  # the latest 10%: the ranker's labels
        tower_params = {k[6:]: v for k, v in self.params.items() if k.startswith("tower_")}
        self.tower = TwoTower(self.context, {"seed": seed, **tower_params}).fit(train)  # stops on them
        full, early = {}, {}
        for name, cls in RETRIEVERS.items():  # tuned on the same 10%, unless given
            full[name] = cls(self.context, {**self.params.get(f"{name}_params", {}), "seed": seed}).fit(train)
        for name, (base, changes) in VARIANTS.items():
            full[name] = type(full[base])(self.context, {**self._tuned(full[base]), **changes}).fit(train)
        for name, part in full.items():
            early[name] = type(part)(self.context, self._tuned(part)).fit(inner.train)
        users = inner.users
        histories = [inner.train[u] for u in users]
        rng = np.random.default_rng(seed)
        new = self._new_items(inner.train)
        pretend = self._pretend_new(inner.train, new, config.pretend_new, rng)
        self.retrievers = early
        self.facts = self._item_facts(inner.train, new | pretend)
        self.played_new = self.context.catalogue.ids[pretend]
        lists = self._lists(histories, users, new | pretend)[0]
        self.played_new = None
        positions = self.context.catalogue.rows
        relevant = [set(positions(sorted(inner.test[u])).tolist()) for u in users]
        labels = [
            np.isin(rows, list(rel)).astype(np.float32)
            for rows, rel in zip(lists.rows, relevant, strict=True)
        ]
        self.rankers, folds = train_rankers(lists, labels, relevant, config, rng, log)
        self.retrievers = full  # serving: retrievers fitted on every training event
        self.facts = self._item_facts(train, self._new_items(train))
        self.params = {
            **self.params,
            **{f"{n}_params": {k: v for k, v in r.params.items() if k != "grid"} for n, r in full.items()},
            "features": lists.names,
            "ranker_folds": folds,
            "ranker_val_recall@10": round(float(np.mean([f["val_recall@10"] for f in folds])), 5),
        }
        return self

    def _pretend_new(self, train: Mapping[str, History], new: np.ndarray, share: float, rng) -> np.ndarray:
        """Items the ranker learns to rank as if new: ``share`` of the known ones, drawn in
        proportion to the people who picked them, so that "new" teaches what a picked item looks
        like without its interactions, not that new items are the unpicked tail."""
        people = self._item_facts(train, new)["people"]
        known = np.nonzero(people > 0)[0]
        n = min(len(known), int(round(share * len(known))))
        out = np.zeros(len(new), bool)
        if n:
            out[rng.choice(known, size=n, replace=False, p=people[known] / people[known].sum())] = True
        return out

    @staticmethod
    def _tuned(part: Strategy) -> dict:
        return {k: v for k, v in part.params.items() if k != "grid" and not k.startswith("_")}

    def _new_items(self, train: Mapping[str, History]) -> np.ndarray:
        """Per catalogue item: True when nobody in ``train`` interacted with it."""
        seen = np.zeros(len(self.context.catalogue), bool)
        rows = self.context.catalogue.rows(sorted({e[0] for events in train.values() for e in events}))
        seen[rows[rows >= 0]] = True
        return ~seen

    def _item_facts(self, train: Mapping[str, History], hidden: np.ndarray) -> dict[str, np.ndarray]:
        """log1p of the people per item, overall and over the latest 10% of events (trend); 0 for
        ``hidden`` items (new, or treated as new)."""
        catalogue = self.context.catalogue
        events = sorted(((e[3], user, e[0]) for user, evs in train.items() for e in evs), key=lambda t: t[0])
        overall = np.zeros(len(catalogue), np.float32)
        recent = np.zeros(len(catalogue), np.float32)
        for table, part in ((overall, events), (recent, events[int(len(events) * 0.9) :])):
            pairs = sorted({(item, user) for _, user, item in part})
            rows = catalogue.rows([item for item, _ in pairs])
            np.add.at(table, rows[rows >= 0], 1.0)
        overall[hidden] = recent[hidden] = 0.0
        return {
            "popularity": np.log1p(overall),
            "trend": np.log1p(recent),
            "hidden": hidden,
            "fresh": np.zeros(len(catalogue), bool),
            "people": overall,
        }

    # -- scoring ---------------------------------------------------------------------------------

    def _retrieve(self, histories: Sequence[History], users: Sequence[str | None]):
        """Every retriever's (histories, items) scores over the catalogue, and which it could score.
        Items played as new (``played_new``, while the ranker learns) get the two-tower vectors a
        new item would: borrowed from look-alikes, their own id rows unused."""
        scores, valid = {}, {}
        for name, retriever in self.retrievers.items():
            result = retriever.score(histories, users)
            scores[name], valid[name] = result.scores, result.valid
        queries = self.tower.score(histories, users)
        space, image = queries.space, self.context.image_space()
        matrix = self.tower.item_matrix(self.played_new)
        scores["tower"] = self._on_catalogue(space.ids, queries.vectors @ matrix.T)
        scores["tower_profile"] = self._on_catalogue(space.ids, _profile_scores(histories, space.ids, matrix))
        scores["image"] = self._on_catalogue(image.ids, _profile_scores(histories, image.ids, image.matrix))
        for name in ("tower", "tower_profile", "image"):
            valid[name] = queries.valid
        return scores, valid

    def _lists(self, histories: Sequence[History], users: Sequence[str | None], new: np.ndarray):
        """(candidates with features, every retriever's scores, which histories could be scored)."""
        catalogue = self.context.catalogue
        scores, valid = self._retrieve(histories, users)
        seen = [catalogue.rows(sorted({e[0] for e in h})) for h in histories]
        lengths = np.log1p([len({e[0] for e in h}) for h in histories]).astype(np.float32)
        items = {
            "popularity": self.facts["popularity"],
            "trend": self.facts["trend"],
            "newness": catalogue.newness.astype(np.float32),
        }
        seen = [s[s >= 0] for s in seen]
        lists = build_lists(scores, valid, seen, items, {"history": lengths}, new, PICTURE, self.config)
        return lists, scores, valid["tower"]

    def _on_catalogue(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores over a space's items (``ids``) laid onto the catalogue (items it lacks: -inf)."""
        catalogue = self.context.catalogue
        if np.array_equal(ids, catalogue.ids):
            return scores.astype(np.float32)
        out = np.full((scores.shape[0], len(catalogue)), -np.inf, np.float32)
        rows = catalogue.rows(ids)
        out[:, rows[rows >= 0]] = scores[:, rows >= 0]
        return out

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        """The ranker's scores for the candidates; every other item below them all, in the order
        of the two-tower's profile (so a list restricted to other items is still ordered)."""
        lists, scores, valid = self._lists(histories, users, self.facts["hidden"])
        ranked = [
            np.mean(parts, axis=0)
            for parts in zip(*(r.scores(lists.features) for r in self.rankers), strict=True)
        ]
        below = np.clip(np.nan_to_num(scores[PICTURE], neginf=-1.0), -1.0, 1.0)
        out = np.empty(below.shape, np.float32)
        fresh, slot = self.facts["fresh"], self.config.new_item_slot
        for n, (rows, values) in enumerate(zip(lists.rows, ranked, strict=True)):
            out[n] = (values.min() if len(values) else 0.0) - 3.0 + below[n]
            if slot:
                pictures = (scores["tower_profile"][n], scores["image"][n])
                values = _with_new_item_at(rows, values, pictures, fresh, slot)
            out[n, rows] = values
        return Dense(out, valid)

    # -- the model registry ------------------------------------------------------------------

    def write(self, folder: Path) -> None:
        for name, part in {**self.retrievers, "two-tower": self.tower}.items():
            (folder / name).mkdir()
            part.write(folder / name)
        for n, ranker in enumerate(self.rankers):
            ranker.save_weights(str(folder / f"ranker{n}.weights.h5"))
        ids = self.context.catalogue.ids
        kept = {k: self.facts[k] for k in ("popularity", "trend", "hidden")}
        np.savez(folder / "items.npz", ids=ids, **kept)
        meta = {"config": asdict(self.config), "features": self.params["features"]}
        meta["vectors"] = self.context.workspace.settings.model  # what its scores were learnt over
        meta["parts"] = {name: part.params for name, part in self.retrievers.items()}
        (folder / "hybrid.json").write_text(json.dumps(meta, default=str))

    def read(self, folder: Path) -> None:
        """A saved version over today's catalogue: items added since are new (no interactions)."""
        from recsys.ranker.model import Ranker

        meta = json.loads((folder / "hybrid.json").read_text())
        model = self.context.workspace.settings.model
        if meta.get("vectors", model) != model:
            raise RecsysError(
                f"hybrid {folder.name} ranks over the vectors of {meta['vectors']}, not {model}: "
                f"serve with --model {meta['vectors']} (RECSYS_MODEL), or train it again"
            )
        self.retrievers = {}
        for name, params in meta["parts"].items():
            cls = RETRIEVERS[VARIANTS[name][0]] if name in VARIANTS else RETRIEVERS[name]
            self.retrievers[name] = cls(self.context, params)
            self.retrievers[name].read(folder / name)
        self.tower = TwoTower(self.context, {})
        self.tower.read(folder / "two-tower")
        config = RankerConfig(**meta["config"])
        n = len(meta["features"])
        self.rankers = []
        for fold in range(config.folds):
            ranker = Ranker(n, np.zeros(n, np.float32), np.ones(n, np.float32), config)
            ranker.load_weights(str(folder / f"ranker{fold}.weights.h5"))
            self.rankers.append(ranker)
        saved = np.load(folder / "items.npz")
        pos, known = id_lookup.find(saved["ids"], self.context.catalogue.ids)
        self.facts = {
            "popularity": np.where(known, saved["popularity"][pos], 0.0).astype(np.float32),
            "trend": np.where(known, saved["trend"][pos], 0.0).astype(np.float32),
            "hidden": np.where(known, saved["hidden"][pos], True),
            "fresh": ~known,  # added since training
        }
