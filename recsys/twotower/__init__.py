"""Two-tower retrieval model (TensorFlow Recommenders), fine-tuned on the interaction logs.

Item tower: a small MLP over the frozen 1280-d image embedding, plus a learned item-id embedding
whose row 0 is the out-of-vocabulary bucket. An item added after training (no id row) borrows the
vectors of the known items it looks most like (``serve.borrowed_vectors``), so it is served without
retraining. User tower: an MLP over the recency-weighted mean image embedding of the user's recent
history, plus optional user-id and history-id embeddings (row 0 again for unknowns). Both outputs
are L2-normalised; the loss is TFRS's in-batch softmax retrieval task with a temperature, the logQ
correction and accidental hits removed.

The rooms: ``model`` (the Keras model; imports TensorFlow), ``data`` (vocabulary and examples),
``train`` (fit, save, load) and ``serve`` (item and user vectors for serving). This module holds
what needs no TensorFlow: the configuration, the saved files, and what a version was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from recsys.splits import TrainedOn

KIND = "two-tower"
#: The files that make a saved version complete (``center.npy`` is added when inputs are centred).
FILES = ("weights.weights.h5", "item_ids.npy", "users.json", "config.json")


@dataclass
class TwoTowerConfig:
    """Hyper-parameters (stored with each model version).

    Defaults measured on MovieLens posters (temporal and cold-item splits, README): recent
    history (20 items) weighted towards the latest (half-life 5 items), small batches, centred
    image inputs and a softer softmax did best together on the validation events.

    Attributes:
        dim: Output dimension of both towers.
        hidden: Width of each tower's hidden layer.
        epochs: Most epochs; training stops earlier when validation recall@10 stops improving.
        patience: Epochs without improvement before stopping.
        batch_size: Examples per batch (the in-batch negatives).
        learning_rate: Adam step size.
        temperature: Softmax temperature of the retrieval task.
        item_ids: Learn an item-id embedding beside the image MLP.
        user_ids: Learn a user-id embedding beside the history MLP.
        center_inputs: Feed the towers image vectors centred on the catalogue mean and
            re-normalised, as the average profile searches them.
        history_ids: Add the mean of learned id embeddings of the history's items to the user
            tower (it then knows which items, not only what they look like).
        logq: Correct the in-batch softmax for how often each item appears as a negative
            (popular items would otherwise be pushed down just for being popular).
        history_length: Most recent distinct items a history keeps.
        recency_half_life: The history's image mean weighs an item by 0.5 ** (its age in items /
            this), the latest item 1; 0 weighs every item alike.
        holdout: Share of each user's latest events kept out of training entirely, for an honest
            `recsys evaluate` on the same temporal split (0: production, train on everything).
        split: The evaluation split ``holdout`` is kept out for: "temporal" (each user's latest
            interactions) or "global-time" (every event from one moment on).
        cold_share: Share of the catalogue (chosen with ``seed``, as the cold-item split does) left
            out of training entirely: their events, and their id rows (they use the unknown row).
        id_dropout: Chance that a training example's item-id row is swapped for the unknown row,
            so the image path learns to stand alone for items added later.
        new_item_neighbours: An item without an id row (added after training, or new in the
            cold-item split) gets the softmax-weighted mean of the item vectors of this many known
            items nearest to it by image (cosine of the centred image vectors), re-normalised; 0:
            its vector comes from pixels alone, through the item MLP and the unknown id row.
        new_item_temperature: Softmax temperature over those image cosines.
        val_fraction: Share of each user's latest remaining events used for early stopping.
        min_events: Users with fewer events are training-only (as in the evaluation split).
        seed: Seed of initialisation and shuffling.
    """

    dim: int = 64
    hidden: int = 256
    epochs: int = 20
    patience: int = 3
    batch_size: int = 256
    learning_rate: float = 0.003
    temperature: float = 0.2
    item_ids: bool = True
    user_ids: bool = False
    history_ids: bool = False
    center_inputs: bool = True
    logq: bool = True
    history_length: int = 20
    recency_half_life: float = 5.0
    holdout: float = 0.0
    split: str = "temporal"
    cold_share: float = 0.0
    id_dropout: float = 0.0
    new_item_neighbours: int = 100
    new_item_temperature: float = 0.1
    val_fraction: float = 0.1
    min_events: int = 3
    seed: int = 0


@dataclass
class TrainReport:
    version: int
    path: str
    epochs_run: int
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    examples: int = 0
    val_examples: int = 0
    held_out: dict = field(default_factory=dict)  # what was kept out for the evaluation (``splits``)

    def as_dict(self) -> dict:
        return asdict(self)


def trained_on(params: Mapping) -> TrainedOn:
    """What a saved version's training left out (``splits.leak`` reads it).

    The two-tower takes its holdout after the new items' events have left, so with a cold share
    its holdout is not counted over all of a user's events, which a temporal split's is.
    """
    return TrainedOn.from_params(params, holdout_after_cold=True)
