"""What serving answers with: recommended items, the lists they come in, and history entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Recommendation:
    """One recommended item; ``because`` names the history item that explains it, if any."""

    item_id: int
    key: str
    score: float
    label: str | None = None
    title: str | None = None
    because: str | None = None

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
