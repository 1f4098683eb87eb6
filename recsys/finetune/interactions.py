"""`recsys finetune --interactions`: "fine-tuning for a task", the recommender's own.

ImageNet features say what is *in* a picture, not what the people who pick it have in common. A
two-tower model (``twotower.train.fit``) learns that from the logs, one vector per trained item;
the new embedder keeps those vectors, keyed by the trained pictures' Lite0 features, and gives any
picture the softmax mix of the vectors of the trained pictures it looks most like
(``embedders.memory.LookAlikeMemory``). A trained picture is its own nearest; a new one borrows from
its look-alikes, which is what carries over to items nobody has picked yet.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from recsys import store
from recsys.errors import RecsysError
from recsys.events import history_weights
from recsys.metrics import mean_recall
from recsys.twotower import TwoTowerConfig
from recsys.twotower.serve import borrowed_vectors, image_inputs

#: What the task stops on, as named in its epoch rows and report.
METRIC = "held-out recall@10 of the average profile"
#: Each user's latest share of training events, to stop on.
VALIDATION_EVENTS = 0.1


def profile_recall(space: np.ndarray, weights, relevant: list[set[int]], k: int = 10) -> float:
    """Mean recall@k of average profiles (``weights`` over rows of ``space``), the profile's own
    items excluded, as the average strategy ranks."""
    tops = []
    for start in range(0, weights.shape[0], 256):
        w = weights[start : start + 256]
        profiles = w @ space
        profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
        scores = profiles @ space.T
        scores[w.nonzero()] = -np.inf
        tops.extend(row.tolist() for row in np.argpartition(-scores, k, axis=1)[:, :k])
    return mean_recall(tops, relevant) if relevant else 0.0


def train_interactions(workspace, config, ids, cold, val, history, say):
    """(memory layer, frozen figure, epochs) of ``--interactions``.

    The two-tower learns, from the temporal split's training events without the new and
    held-out items, one vector per trained item. Training stops on the average profile's
    recall@10 over the remembered vectors, on each user's latest training events, ranked over
    every item that is not new (the held-out items borrow: they were never trained).
    """
    from recsys.embedders import lite0
    from recsys.embedders.memory import NAME, LookAlikeMemory
    from recsys.twotower.train import fit

    with workspace.session() as s:
        known, raw = store.load_embeddings(s, lite0.NAME)
    at = {int(i): n for n, i in enumerate(known)}
    missing = [int(i) for i in ids if int(i) not in at]
    if missing:
        raise RecsysError(
            f"finetune --interactions starts from the stored {lite0.NAME} vectors: {len(missing)} "
            f"items have none (e.g. item {missing[0]}); run `recsys embed --model {lite0.NAME}`"
        )
    raw = raw[[at[int(i)] for i in ids]].astype(np.float32)
    tower = TwoTowerConfig(
        epochs=config.epochs,
        patience=config.patience,
        seed=config.seed,
        val_fraction=VALIDATION_EVENTS,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
    )
    center = raw.mean(axis=0)
    inputs = image_inputs(raw, center)
    measured = np.where(~cold)[0]
    measured_at = {int(ids[r]): n for n, r in enumerate(measured)}
    validation: dict = {}

    def weights_of(train: dict, test: dict):
        users = [u for u in test if u in train]
        rows, cols, vals = [], [], []
        for n, user in enumerate(users):
            for item, w in history_weights(train[user]).items():
                if item in measured_at:
                    rows += [n]
                    cols += [measured_at[item]]
                    vals += [w]
        weights = sparse.csr_matrix((vals, (rows, cols)), shape=(len(users), len(measured)))
        relevant = [{measured_at[i] for i in test[u] if i in measured_at} or {-1} for u in users]
        return weights, relevant

    def remembered(model, vocab):
        rows = vocab.item_rows(ids)
        trained = rows > 0
        return inputs[trained], model.item_tower(inputs[trained], rows[trained]).numpy()

    def measure(model, vocab, train, test) -> float:
        if not validation:
            validation["weights"], validation["relevant"] = weights_of(train, test)
            say(f"measuring the average profile on {len(validation['relevant'])} users' latest events")
            frozen = image_inputs(inputs[measured], inputs[measured].mean(axis=0))
            validation["frozen"] = profile_recall(frozen, validation["weights"], validation["relevant"])
        keys, values = remembered(model, vocab)
        vectors = borrowed_vectors(
            inputs[measured], keys, values, tower.new_item_neighbours, tower.new_item_temperature
        )
        space = image_inputs(vectors, vectors.mean(axis=0))
        return profile_recall(space, validation["weights"], validation["relevant"])

    model, vocab, report = fit(
        ids,
        raw,
        history,
        tower,
        left_out=frozenset(ids[cold | val].tolist()),
        measure=measure,
        metric=METRIC,
        log=say,
    )
    keys, values = remembered(model, vocab)
    layer = LookAlikeMemory(
        len(keys),
        keys.shape[1],
        values.shape[1],
        tower.new_item_neighbours,
        tower.new_item_temperature,
        name=NAME,
    )
    layer.build((None, keys.shape[1]))
    layer.set_weights([center, keys, values])
    return layer, validation.get("frozen", 0.0), report
