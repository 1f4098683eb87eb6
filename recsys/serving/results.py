"""What serving answers with: recommended items, the lists they come in, and history entries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

#: Words that do not make a file name readable (cameras name their pictures IMG_0042, DSC_1234).
_CAMERA_WORDS = {"img", "dsc", "dscn", "dcim", "pic", "photo", "image", "jpeg", "jpg", "png"}


def readable_title(title: str | None, label: str | None, item_id: int) -> str:
    """A title a person can read: the item's own, unless it is only a file name of digits and hashes
    (``10164073235_f29931d91e``, ``IMG_0042``); then its label and number ("Tulip 37")."""
    if title:
        words = [w for w in re.split(r"[\W_]+", title) if len(w) >= 3]
        if any(w.isalpha() and w.lower() not in _CAMERA_WORDS for w in words):
            return title
    return f"{(label or 'item').capitalize()} {item_id}"


@dataclass(frozen=True)
class Recommendation:
    """One recommended item; ``because`` names the history item that explains it, if any."""

    item_id: int
    key: str
    score: float
    label: str | None = None
    title: str | None = None
    because: str | None = None
    because_id: int | None = None  # the history item that explains it, for a page to show
    because_title: str | None = None
    because_event: str | None = None  # what the user did with it (their strongest event)

    @property
    def display_title(self) -> str:
        return readable_title(self.title, self.label, self.item_id)

    def as_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "key": self.key,
            "score": self.score,
            "label": self.label,
            "title": self.title,
            "because": self.because,
        }


@dataclass
class RecommendationList:
    """What ``Recommender.recommend`` returns: the items and how they were chosen."""

    user: str
    strategy: str
    items: list[Recommendation]
    cold_start: bool = False
    history_size: int = 0
    notes: list[str] = field(default_factory=list)
    requested: str = ""  # what was asked for ("auto" names the strategy it chose)
    request_id: str = ""  # sent back with a click, it ties the click to this list
    experiment: str | None = None  # the running experiment whose arm ranked the list
    arm: str | None = None

    def as_dict(self) -> dict:
        return {
            "user": self.user,
            "request_id": self.request_id,
            "strategy": self.strategy,
            "requested": self.requested or self.strategy,
            "experiment": self.experiment,
            "cold_start": self.cold_start,
            "history_size": self.history_size,
            "notes": self.notes,
            "items": [r.as_dict() for r in self.items],
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a user's history, described for display."""

    item_id: int
    key: str
    event: str
    ts: datetime
    label: str | None = None
    title: str | None = None

    @property
    def display_title(self) -> str:
        return readable_title(self.title, self.label, self.item_id)
