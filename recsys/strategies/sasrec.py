"""SASRec as a strategy: self-attention over a person's latest item ids (``recsys.sasrec``).

``fit`` trains each point of a small grid on the training events minus each user's latest 10%
(the validation events), stops each early on their recall@10, and keeps the best point's model:
tuned on validation events only, as EASE and ALS are. Items added after training have no
embedding, so they get no score (``needs_interactions``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recsys import ids as id_lookup
from recsys.early_stopping import run_epochs
from recsys.events import History, item_sequence
from recsys.sasrec import SasrecConfig, latest, windows
from recsys.splits import temporal_split
from recsys.strategies.base import Dense, Strategy, validation_recall, validation_set

#: Points tried on the validation events (the rest of ``SasrecConfig`` as it is).
GRID = ({"blocks": 2, "dropout": 0.2}, {"blocks": 2, "dropout": 0.5}, {"blocks": 1, "dropout": 0.2})
TUNED = ("blocks", "dropout")


class Sasrec(Strategy):
    name = "sasrec"
    needs_model = True
    files = ("weights.h5", "item_ids.npy", "config.json")

    model = None
    trained_ids: np.ndarray | None = None

    def _config(self, **given) -> SasrecConfig:
        fields = {f.name for f in dataclasses.fields(SasrecConfig)}
        return SasrecConfig(**{k: v for k, v in {**self.params, **given}.items() if k in fields})

    def _sequences(self, histories: Sequence[History], ids: np.ndarray) -> list[np.ndarray]:
        """Each history's distinct items as 1-based rows of ``ids`` (unknown items dropped)."""
        out = []
        for history in histories:
            pos, known = id_lookup.find(ids, item_sequence(history))
            out.append(pos[known] + 1)
        return out

    def fit(self, train: Mapping[str, History]) -> Sasrec:
        import tensorflow as tf

        from recsys.sasrec.model import Sasrec as Model

        ids = self.context.catalogue.ids
        split = temporal_split(train, fraction=0.1, min_events=3)
        inputs, targets = windows(self._sequences(list(split.train.values()), ids), SasrecConfig.length)
        validation = validation_set(split.train, split.test, self.context.catalogue)
        self.trained_ids = ids
        grid = [{k: self.params[k] for k in TUNED}] if all(k in self.params for k in TUNED) else GRID
        table, best = [], None
        for point in grid:
            config = self._config(**point)
            tf.keras.utils.set_random_seed(config.seed)
            rng = np.random.default_rng(config.seed)
            self.model = Model(len(ids), config)
            done = run_epochs(
                lambda rng=rng: self.model.epoch(inputs, targets, rng),
                lambda: validation_recall(self, validation),
                epochs=config.epochs,
                patience=config.patience,
                metric="val_recall@10",
                snapshot=self.model.get_weights,
                restore=self.model.set_weights,
                say=self.context.log or (lambda _: None),
            )
            table.append({**point, "epochs": done.best_epoch, "val_recall@10": round(done.best, 5)})
            if best is None or done.best > best[0]:
                best = (done.best, point, self.model)
        _, point, self.model = best
        self.params = {**self.params, **dataclasses.asdict(self._config(**point)), "grid": table}
        return self

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        ids = self.context.catalogue.ids
        sequences = self._sequences(histories, self.trained_ids)
        scores = self.model.scores(latest(sequences, self.model.config.length))
        if not np.array_equal(self.trained_ids, ids):  # lay onto today's catalogue: new items unscored
            pos, known = id_lookup.find(self.trained_ids, ids)
            scores = np.where(known[None, :], scores[:, pos], -np.inf).astype(np.float32)
        return Dense(scores, np.array([len(s) > 0 for s in sequences], dtype=bool))

    # -- the model registry ------------------------------------------------------------------

    def write(self, folder: Path) -> None:
        self.model.save_weights(str(folder / "weights.h5"))
        np.save(folder / "item_ids.npy", self.trained_ids)
        (folder / "config.json").write_text(json.dumps(dataclasses.asdict(self.model.config)))

    def read(self, folder: Path) -> None:
        from recsys.sasrec.model import Sasrec as Model

        self.trained_ids = np.load(folder / "item_ids.npy")
        self.model = Model(
            len(self.trained_ids), SasrecConfig(**json.loads((folder / "config.json").read_text()))
        )
        self.model.load_weights(str(folder / "weights.h5"))
