"""Rate-limit counters that every server process of one machine shares: a small SQLite file.

The ``limits`` library keeps its counters in memory by default, one set per process, so with a
worker per core every limit was as many times looser ("20 per hour" let 30 new visitors in with 2
workers). Its shared storages need a server (Redis, memcached); this one needs nothing, and is the
default (``RECSYS_LIMIT_STORAGE=local``). Several machines share limits through Redis.

Only the counters are kept here: the limiting itself (the sliding window, the race between two
hits) is the library's own ``MemoryStorage`` logic, which reads and writes through ``incr``,
``decr`` and ``get``, each one SQL statement, atomic across processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from limits.storage import MemoryStorage

#: What ``RECSYS_LIMIT_STORAGE=local`` becomes: this file in the workspace.
FILE_NAME = "limits.sqlite"
SCHEME = "recsys+sqlite"


class SQLiteStorage(MemoryStorage):
    """``limits`` storage ``recsys+sqlite:///<path>``: fixed-window counters with expiry times.

    Args:
        uri: ``recsys+sqlite:///`` and the file's absolute path.
        wrap_exceptions: As for every ``limits`` storage.
    """

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **_: str) -> None:
        self.path = Path((uri or "").split("://", 1)[-1])
        self._local = threading.local()
        self._pid = os.getpid()
        self._next_prune = 0.0
        super().__init__(uri, wrap_exceptions)

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (made anew after a fork: connections are not shared)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")  # counters: losing the last second on a crash is fine
            conn.execute(
                "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER, expires REAL)"
            )
            self._local.conn = conn
        return conn

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        if now > self._next_prune:  # each window has keys of its own: drop the ended ones now and then
            self._next_prune = now + 60
            self._db().execute("DELETE FROM counters WHERE expires <= ?1", (now,))
        row = (
            self._db()
            .execute(
                "INSERT INTO counters VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET "
                "value = CASE WHEN expires <= ?4 THEN ?2 ELSE value + ?2 END, "
                "expires = CASE WHEN expires <= ?4 THEN ?3 ELSE expires END RETURNING value",
                (key, amount, now + expiry, now),
            )
            .fetchone()
        )
        return int(row[0])

    def decr(self, key: str, amount: int = 1) -> int:
        row = (
            self._db()
            .execute(
                "UPDATE counters SET value = MAX(value - ?2, 0) WHERE key = ?1 RETURNING value", (key, amount)
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get(self, key: str) -> int:
        row = (
            self._db()
            .execute("SELECT value FROM counters WHERE key = ?1 AND expires > ?2", (key, time.time()))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._db().execute("SELECT expires FROM counters WHERE key = ?1", (key,)).fetchone()
        return float(row[0]) if row else time.time()

    def clear(self, key: str) -> None:
        self._db().execute("DELETE FROM counters WHERE key = ?1", (key,))

    def check(self) -> bool:
        return self._db().execute("SELECT 1").fetchone() == (1,)

    def reset(self) -> int | None:
        return self._db().execute("DELETE FROM counters").rowcount

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        raise NotImplementedError(
            "the moving window strategy needs Redis: recsys uses sliding-window-counter"
        )

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        raise NotImplementedError(
            "the moving window strategy needs Redis: recsys uses sliding-window-counter"
        )


def storage_uri(setting: str, home: Path) -> str:
    """The ``limits`` storage URI of a ``RECSYS_LIMIT_STORAGE`` value ("local": this machine's file)."""
    if setting.strip() == "local":
        return f"{SCHEME}://{(Path(home) / FILE_NAME).resolve()}"
    return setting
