"""What the two-tower trains on: its vocabulary, and "history before an event -> its item" examples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from recsys import ids as id_lookup
from recsys.events import Event


@dataclass
class Vocabulary:
    """Item ids -> rows 1..n of the image table; user keys -> rows 1..m (0: unknown).

    Attributes:
        item_ids: The trained items' ids, ascending.
        users: The trained users' keys.
    """

    item_ids: np.ndarray
    users: list[str]
    _user_rows: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._user_rows = {u: i + 1 for i, u in enumerate(self.users)}

    def item_rows(self, ids) -> np.ndarray:
        pos, found = id_lookup.find(self.item_ids, ids)
        return np.where(found, pos + 1, 0).astype(np.int32)

    def user_row(self, user: str | None) -> int:
        return self._user_rows.get(user, 0) if user else 0


def make_examples(
    train: Mapping[str, list[Event]], vocab: Vocabulary, history_length: int
) -> dict[str, np.ndarray]:
    """(history rows, user row, target item row) for every event after a user's first."""
    histories, users, items = [], [], []
    for user, events in train.items():
        rows = vocab.item_rows([e[0] for e in events])
        seen: list[int] = []
        for row in rows:
            if row == 0:
                continue
            if seen and row not in seen[-history_length:]:
                hist = seen[-history_length:]
                histories.append(hist + [0] * (history_length - len(hist)))
                users.append(vocab.user_row(user))
                items.append(row)
            if row not in seen:
                seen.append(row)
    items_arr = np.array(items, dtype=np.int32)
    counts = np.bincount(items_arr, minlength=len(vocab.item_ids) + 1) if len(items_arr) else np.zeros(1)
    return {
        "history": np.array(histories, dtype=np.int32).reshape(-1, history_length),
        "user": np.array(users, dtype=np.int32),
        "item": items_arr,
        "probability": (counts[items_arr] / max(len(items_arr), 1)).astype(np.float32),
    }


def recent_rows(histories: list[np.ndarray], length: int) -> np.ndarray:
    """The last ``length`` distinct rows of each history (oldest first), zero-padded."""
    out = np.zeros((len(histories), length), dtype=np.int32)
    for n, rows in enumerate(histories):
        distinct = list(dict.fromkeys(reversed([int(r) for r in rows if r > 0])))[:length][::-1]
        out[n, : len(distinct)] = distinct
    return out
