"""SASRec (Kang and McAuley, 2018): self-attention over a person's latest item ids, predicting the
next one. The standard sequential baseline, and the one a team choosing a recommender asks for.

Trained with a full softmax over the catalogue at every position (cross-entropy, which beats the
paper's one sampled negative: Klenitskiy and Vasilev, 2023). This module holds what needs no
TensorFlow: the configuration and the training windows; ``model`` holds the Keras model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SasrecConfig:
    """Hyper-parameters.

    Attributes:
        length: Latest distinct items a sequence keeps (L).
        dim: Width of the item and position embeddings and of every block.
        blocks: Self-attention blocks, one after another.
        heads: Attention heads per block.
        dropout: Dropout on embeddings, attention and feed-forward outputs while training.
        learning_rate: Adam step size.
        batch_size: Sequences per batch.
        epochs: Most epochs; training stops earlier when validation recall@10 stops improving.
        patience: Epochs without improvement before stopping.
        seed: Seed of initialisation and shuffling.
    """

    length: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    learning_rate: float = 0.001
    batch_size: int = 128
    epochs: int = 60
    patience: int = 5
    seed: int = 0


def windows(sequences: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (N, ``length``), left-padded with 0, from sequences of item rows
    (1-based, oldest first): every step's target is the item after it. A sequence longer than
    ``length`` + 1 is cut into windows from its end, so every transition is trained on once."""
    inputs, targets = [], []
    for rows in sequences:
        rows = np.asarray(rows, np.int32)
        for end in range(len(rows), 1, -length):
            part = rows[max(0, end - length - 1) : end]
            x, y = part[:-1], part[1:]
            inputs.append(np.pad(x, (length - len(x), 0)))
            targets.append(np.pad(y, (length - len(y), 0)))
    if not inputs:
        return np.zeros((0, length), np.int32), np.zeros((0, length), np.int32)
    return np.stack(inputs), np.stack(targets)


def latest(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    """(N, ``length``) inputs to score: each sequence's latest items, left-padded with 0."""
    out = np.zeros((len(sequences), length), np.int32)
    for n, rows in enumerate(sequences):
        rows = np.asarray(rows, np.int32)[-length:]
        if len(rows):
            out[n, -len(rows) :] = rows
    return out
