"""What was shown: every served list gets a request id, and each of its items one impression row.

Serving must not wait for the database, so the web server logs through a background writer that
commits in batches (``ImpressionLog(background=True)``); the CLI writes at once. A click that
carries the list's ``request_id`` is attributed to the impression of that item in that list.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete

from recsys import store
from recsys.errors import RecsysError

#: Positions of a list logged as shown: a page shows 12; a client asking for 100 shows a first page,
#: and one read then writes at most this many rows.
SHOWN_POSITIONS = 20
#: Seconds within which the same list shown to the same person again is the same impression.
REPEAT_SECONDS = 600.0
#: What a request id looks like (``new_request_id`` makes 32 hex digits; callers may send their own).
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,32}")


_INSERT = store.BulkInsert(
    store.Impression.__table__,
    ["request_id", "user_key", "item_id", "position", "strategy", "experiment", "arm", "shown_at"],
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_request_id(value: object) -> str:
    """The request id as given, or a one-line error."""
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        raise RecsysError("request_id must be 8 to 32 letters, digits, '-' or '_'")
    return value


@dataclass(frozen=True)
class Shown:
    """One served list.

    Attributes:
        request_id: The list's id (returned to the caller, sent back with clicks).
        user: The user key, or None for a visitor not stored yet.
        item_ids: The items in the order shown.
        strategy: The strategy that ranked them.
        experiment: The running experiment the user is in, if any.
        arm: The arm (strategy) the experiment assigned to the user.
        at: When the list was served.
    """

    request_id: str
    user: str | None
    item_ids: Sequence[int]
    strategy: str
    experiment: str | None
    arm: str | None
    at: datetime

    def rows(self) -> list[dict]:
        """One row per item shown, the first ``SHOWN_POSITIONS`` of the list."""
        return [
            {
                "request_id": self.request_id,
                "user_key": self.user,
                "item_id": int(item_id),
                "position": position,
                "strategy": self.strategy,
                "experiment": self.experiment,
                "arm": self.arm,
                "shown_at": self.at,
            }
            for position, item_id in enumerate(self.item_ids[:SHOWN_POSITIONS], 1)
        ]


class ImpressionLog:
    """Writes impressions, at once or in batches from a background thread.

    Args:
        workspace: Where the ``impressions`` table lives.
        background: Queue rows and let a thread commit them every ``interval`` seconds (serving);
            False writes each list in its own transaction before returning (CLI, simulation).
        interval: Seconds between background commits.
        chunk: Most rows per transaction. SQLite has one write lock, and an event insert that
            arrives during a commit waits for it: ~15 microseconds a row here, so 1,750 rows
            (half a second of 8 busy clients) held it for 25 ms; 200 rows hold it ~3 ms.
        max_queued: Rows kept while the database refuses writes; beyond, the oldest are dropped
            (and counted): serving never blocks on the log.
    """

    def __init__(
        self,
        workspace,
        *,
        background: bool = False,
        interval: float = 0.2,
        chunk: int = 200,
        max_queued: int = 200_000,
    ) -> None:
        self.workspace = workspace
        self.background = background
        self.interval = interval
        self.chunk = chunk
        self.max_queued = max_queued
        self.dropped = 0
        self._rows: list[dict] = []
        self._recent: dict[tuple, tuple[str, float]] = {}  # list shown -> (request id, when)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        if background:
            atexit.register(self.flush)

    def log(self, shown: Shown) -> str:
        """Log a served list; returns its request id. The same list shown again to the same person
        (same items in the same order, same strategy and arm) within ``REPEAT_SECONDS`` is the same
        impression: nothing is logged, and the first showing's request id is returned, so a click
        is still attributed and a reloaded page or a polling client adds nothing."""
        rows = shown.rows()
        if not rows:
            return shown.request_id
        self._after_fork()
        earlier = self._repeat(shown)
        if earlier is not None:
            return earlier
        if not self.background:
            self._write(rows)
            return shown.request_id
        with self._lock:
            self._rows.extend(rows)
            if len(self._rows) > self.max_queued:
                extra = len(self._rows) - self.max_queued
                del self._rows[:extra]
                self.dropped += extra
        if self._thread is None or not self._thread.is_alive():
            self._start()
        return shown.request_id

    def _repeat(self, shown: Shown) -> str | None:
        """The request id of this very list shown to this person within the window, else None
        (and this showing is remembered)."""
        logged = shown.item_ids[
            :SHOWN_POSITIONS
        ]  # what a row set holds: a longer list with the same head is the same
        key = (shown.user, shown.strategy, shown.experiment, shown.arm, tuple(int(i) for i in logged))
        now = time.monotonic()
        with self._lock:
            hit = self._recent.get(key)
            if hit is not None and now - hit[1] < REPEAT_SECONDS:
                return hit[0]
            if len(self._recent) >= 100_000:  # forget the oldest half; a repeat may then log again
                for old in sorted(self._recent, key=lambda k: self._recent[k][1])[:50_000]:
                    del self._recent[old]
            self._recent[key] = (shown.request_id, now)
        return None

    def flush(self) -> int:
        """Commit what is queued now, ``chunk`` rows per transaction; returns the rows written."""
        written = 0
        while True:
            with self._lock:
                rows, self._rows = self._rows[: self.chunk], self._rows[self.chunk :]
            if not rows:
                return written
            try:
                self._write(rows)
            except Exception as exc:  # noqa: BLE001 - put them back; the next flush retries
                with self._lock:
                    self._rows[:0] = rows
                print(f"impressions: {len(rows)} rows not written yet ({exc})", file=sys.stderr)
                return written
            written += len(rows)
            time.sleep(0)  # let a waiting request thread run between commits

    def _write(self, rows: list[dict]) -> None:
        prepared = _INSERT.prepare(self.workspace.engine, rows)  # before the write lock, not in it

        def transaction() -> None:
            with self.workspace.writing(), self.workspace.engine.begin() as conn:
                _INSERT.execute(conn, prepared)

        store.retry_on_busy(transaction)

    def _after_fork(self) -> None:
        """A forked worker inherits the parent's queue and lock but not its thread: start afresh."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._rows, self._lock, self._wake, self._thread = [], threading.Lock(), threading.Event(), None
            self._recent = {}

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="impressions", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()


def prune(workspace, older_than_days: float) -> int:
    """Delete impressions shown more than ``older_than_days`` ago; returns how many."""
    if not older_than_days > 0:
        raise RecsysError(f"--older-than must be a positive number of days, got {older_than_days}")
    cutoff = store.utcnow() - timedelta(days=older_than_days)
    with workspace.engine.begin() as conn:
        return conn.execute(delete(store.Impression).where(store.Impression.shown_at < cutoff)).rowcount
