"""Recording what users do: one code path for ``recsys record``, bulk CSV imports and the web page.

Users are created on first sight. Unknown items are refused (bulk: per row, the valid rows kept).
An optional ``event_key`` makes a write idempotent: the same key is stored once, however often
it is sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from recsys import store
from recsys.errors import NotFound, RecsysError

#: Default weight of each event type in a profile (an explicit weight on the event wins).
EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 1.5, "like": 3.0, "purchase": 5.0}


@dataclass(frozen=True)
class Event:
    """One thing a user did.

    Attributes:
        user: The caller's user key (created on first sight).
        item: The item key; must exist.
        event: One of ``EVENT_WEIGHTS``.
        ts: When it happened (UTC); ``None`` means now.
        weight: Overrides the event type's default weight in profiles.
        event_key: Idempotency key: an event with a key already stored is not stored again.
    """

    user: str
    item: str
    event: str = "view"
    ts: datetime | None = None
    weight: float | None = None
    event_key: str | None = None


@dataclass
class RecordReport:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": [{"where": w, "reason": r} for w, r in self.rejected],
        }


def parse_time(value: str | float | datetime | None) -> datetime:
    """ISO-8601 text or Unix seconds -> aware UTC datetime (naive input is taken as UTC)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return datetime.now(UTC)
    if isinstance(value, datetime):
        ts = value
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = None
        if seconds is not None:
            if not math.isfinite(seconds) or not 0 <= seconds < 32503680000:
                raise RecsysError(f"timestamp {text!r} is out of range")
            return datetime.fromtimestamp(seconds, UTC)
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RecsysError(f"timestamp {text!r} is neither ISO-8601 nor Unix seconds") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def validate(event: Event) -> Event:
    """A normalised copy of ``event``, or ``RecsysError`` naming what is wrong with it."""
    user, item = str(event.user).strip(), str(event.item).strip()
    if not user:
        raise RecsysError("empty user")
    store.check_text(user, "user key", store.LABEL_LENGTH)
    if not item:
        raise RecsysError("empty item")
    store.check_text(item, "item key", store.KEY_LENGTH)
    kind = str(event.event or "view").strip().lower()
    if kind not in EVENT_WEIGHTS:
        raise RecsysError(f"unknown event {kind!r}; use one of {', '.join(EVENT_WEIGHTS)}")
    weight = event.weight
    if weight is not None:
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise RecsysError(f"weight {event.weight!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise RecsysError(f"weight {event.weight!r} must be a finite number >= 0")
    key = event.event_key
    if key is not None and (not str(key).strip() or len(str(key)) > 128):
        raise RecsysError("event_key must be 1 to 128 characters")
    if key is not None:
        store.check_text(str(key), "event_key")
    return Event(user, item, kind, parse_time(event.ts), weight, key)


def record(workspace, events: Sequence[Event], *, strict: bool = True) -> RecordReport:
    """Store events in one transaction. ``strict``: any bad event stores nothing and raises."""
    report = RecordReport()
    good: list[tuple[int, Event]] = []
    for n, raw in enumerate(events):
        try:
            good.append((n, validate(raw)))
        except RecsysError as exc:
            if strict:
                raise
            report.rejected.append((str(n), str(exc)))
    if not good:
        return report
    with workspace.session() as session:
        item_ids = store.item_ids(session, {e.item for _, e in good})
    kept = []
    for n, e in good:
        if e.item in item_ids:
            kept.append(e)
        elif strict:
            raise NotFound(f"unknown item {e.item!r}")
        else:
            report.rejected.append((str(n), f"unknown item {e.item!r}"))
    if kept:
        stored = store.retry_on_busy(lambda: _write(workspace, kept, item_ids))
        report.stored += stored
        report.duplicates += len(kept) - stored
    return report


def _write(workspace, events: list[Event], item_ids: dict[str, int]) -> int:
    users = sorted({e.user for e in events})
    now = store.utcnow()
    with workspace.session() as session, session.begin():
        # A write first, so SQLite takes the write lock before this transaction reads anything.
        store.insert_ignoring_duplicates(session, store.User, [{"key": u, "created_at": now} for u in users])
        user_ids: dict[str, int] = {}
        for start in range(0, len(users), 500):
            chunk = users[start : start + 500]
            user_ids.update(
                session.execute(select(store.User.key, store.User.id).where(store.User.key.in_(chunk))).all()
            )
        rows = [
            {
                "user_id": user_ids[e.user],
                "item_id": item_ids[e.item],
                "event": e.event,
                "weight": e.weight,
                "ts": e.ts,
                "event_key": e.event_key,
            }
            # one order for every writer, so concurrent PostgreSQL inserts of the same keys cannot deadlock
            for e in sorted(events, key=lambda e: e.event_key or "")
        ]
        return store.insert_ignoring_duplicates(session, store.Interaction, rows)


def import_csv(
    workspace,
    path: str | Path,
    *,
    chunk_size: int = 5000,
    on_problem: Callable[[str, str], None] | None = None,
) -> RecordReport:
    """Bulk-load ``user,item,event,timestamp[,weight[,event_key]]`` rows, one transaction a chunk."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise RecsysError(f"{path}: no such file")
    report = RecordReport()
    try:
        reader = pd.read_csv(
            path, dtype=str, keep_default_na=False, chunksize=chunk_size, skipinitialspace=True
        )
        first_row = 2
        for chunk in reader:
            chunk.columns = [str(c).strip().lower() for c in chunk.columns]
            missing = [c for c in ("user", "item") if c not in chunk.columns]
            if missing:
                raise RecsysError(
                    f"{path}: missing column(s) {', '.join(missing)}; "
                    "expected user,item,event,timestamp[,weight]"
                )
            events, rows, problems = [], [], []
            for offset, row in enumerate(chunk.to_dict("records")):
                try:
                    events.append(
                        validate(
                            Event(
                                user=row["user"],
                                item=row["item"],
                                event=row.get("event") or "view",
                                ts=row.get("timestamp") or None,
                                weight=row.get("weight") or None,
                                event_key=row.get("event_key") or None,
                            )
                        )
                    )
                    rows.append(first_row + offset)
                except RecsysError as exc:
                    problems.append((first_row + offset, str(exc)))
            first_row += len(chunk)
            part = record(workspace, events, strict=False)
            report.stored += part.stored
            report.duplicates += part.duplicates
            problems += [(rows[int(index)], reason) for index, reason in part.rejected]
            for row_number, reason in sorted(problems):
                _reject(report, on_problem, f"{path.name}:{row_number}", reason)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RecsysError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    except pd.errors.EmptyDataError:
        raise RecsysError(f"{path}: empty file") from None
    return report


def _reject(report: RecordReport, on_problem, where: str, reason: str) -> None:
    report.rejected.append((where, reason))
    if on_problem:
        on_problem(where, reason)
