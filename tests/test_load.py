"""16 writers at once, 1,000 events each, through the HTTP API and the CLI: each stored exactly once.

Eight threads, each with its own write token, post to `recsys serve` (gunicorn, two worker
processes): four send single events, four batches of 50; eight processes run `recsys record --csv`
chunk after chunk. All of them re-send part of what they already sent, as a client does after a
timeout, and retry on errors with the same event keys. The database must end up with every event
once: no loss, no duplicate.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from tests.conftest import (
    BUNDLED,
    bearer,
    cli_env,
    db_rows,
    make_token,
    running_server,
    save_figures,
    sqlite_only,
)

API_WRITERS, CLI_WRITERS, EVENTS_PER_WRITER = 8, 8, 1000
CLI_CHUNKS = 4  # `recsys record --csv` runs per CLI writer (plus one repeated chunk)
RESEND_EVERY = 10  # every 10th API event (or batch) is sent a second time
BATCH = 50  # events per request of the batch writers
ITEMS = sorted(f"{p.parent.name}/{p.stem}" for p in BUNDLED.rglob("*.jpg"))


def _event(writer: str, i: int) -> dict:
    return {
        "user": f"{writer}-user{i % 25}",
        "item": ITEMS[(i * 7 + len(writer)) % len(ITEMS)],
        "event": ("view", "click", "like", "purchase")[i % 4],
        "at": f"2024-03-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "event_key": f"{writer}-{i}",
    }


class ApiWriter(threading.Thread):
    """Posts its events one by one on a keep-alive connection; errors are retried with the same key."""

    def __init__(self, url: str, name: str, token: str) -> None:
        super().__init__(name=name)
        self.address = urlparse(url)
        self.headers = {"Content-Type": "application/json", **bearer(token)}
        self.stored = self.duplicates = self.retries = 0
        self.failures: list[str] = []

    def post(self, conn: http.client.HTTPConnection, body, label: str) -> http.client.HTTPConnection:
        """Send ``body`` until it gets an answer below 500 (the same keys each time), and count it."""
        for attempt in range(10):
            try:
                conn.request("POST", "/api/events", json.dumps(body), self.headers)
                response = conn.getresponse()
                payload = json.loads(response.read())
                if response.status < 500:
                    self.count(response.status, payload, label)
                    return conn
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=60)
            self.retries += 1
            time.sleep(0.05 * (attempt + 1))
        self.failures.append(f"{label}: gave up after 10 attempts")
        return conn

    def count(self, status: int, payload: dict, label: str) -> None:
        if status == 201:
            self.stored += 1
        elif status == 200 and payload.get("duplicate"):
            self.duplicates += 1
        else:
            self.failures.append(f"{label}: {status} {payload}")

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=60)
        for i in range(EVENTS_PER_WRITER):
            body = _event(self.name, i)
            conn = self.post(conn, body, body["event_key"])
            if i % RESEND_EVERY == 0:
                conn = self.post(conn, body, body["event_key"])  # the client "timed out" and sends it again
        conn.close()


class BatchWriter(ApiWriter):
    """Posts its events ``BATCH`` at a time; every ``RESEND_EVERY``-th batch twice; a batch that
    errs is sent again whole, with the same keys."""

    def count(self, status: int, payload: dict, label: str) -> None:
        if status != 200:
            self.failures.append(f"{label}: {status} {payload}")
            return
        results = [r["result"] for r in payload["results"]]
        self.stored += results.count("stored")
        self.duplicates += results.count("duplicate")
        self.failures += [f"{label}: {r}" for r in payload["results"] if r["result"] == "error"]

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=60)
        for b, start in enumerate(range(0, EVENTS_PER_WRITER, BATCH)):
            events = [_event(self.name, i) for i in range(start, start + BATCH)]
            conn = self.post(conn, events, f"{events[0]['event_key']}...")
            if b % RESEND_EVERY == 0:
                conn = self.post(conn, events, f"{events[0]['event_key']}...")
        conn.close()


def _cli_writer_script(home: Path, folder: Path, name: str) -> list[list[str]]:
    """CSV chunks of one CLI writer, and the commands that import them (the second chunk twice)."""
    folder.mkdir(parents=True)
    size = EVENTS_PER_WRITER // CLI_CHUNKS
    commands = []
    for c in range(CLI_CHUNKS):
        rows = [_event(name, i) for i in range(c * size, (c + 1) * size)]
        path = folder / f"{name}-{c}.csv"
        lines = ["user,item,event,timestamp,event_key"]
        lines += [f"{r['user']},{r['item']},{r['event']},{r['at']},{r['event_key']}" for r in rows]
        path.write_text("\n".join(lines) + "\n")
        commands.append([sys.executable, "-m", "recsys.cli", "record", "--csv", str(path), "--json"])
    commands.insert(2, commands[1])  # a re-run of an import that "failed" from the caller's view
    return [[*cmd, "--home", str(home)] for cmd in commands]


def _run_cli_writer(commands: list[list[str]], home: Path, results: list, errors: list) -> None:
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cli_env(home))
        if proc.returncode != 0:
            errors.append(proc.stderr[-500:])
            continue
        results.append(json.loads(proc.stdout))


def test_16_writers_through_api_and_cli_store_every_event_exactly_once(embedded_copy, tmp_path):
    home = embedded_copy
    expected = {f"api{w}-{i}" for w in range(API_WRITERS) for i in range(EVENTS_PER_WRITER)}
    expected |= {f"cli{w}-{i}" for w in range(CLI_WRITERS) for i in range(EVENTS_PER_WRITER)}
    tokens = [make_token(home, "write", f"writer-{w}") for w in range(API_WRITERS)]  # one per client
    started = time.perf_counter()
    with running_server(home, "--workers", "2", "--threads", "8") as url:
        api = [(ApiWriter if w % 2 else BatchWriter)(url, f"api{w}", tokens[w]) for w in range(API_WRITERS)]
        cli_results: list[dict] = []
        cli_errors: list[str] = []
        cli = [
            threading.Thread(
                target=_run_cli_writer,
                args=(
                    _cli_writer_script(home, tmp_path / f"cli{w}", f"cli{w}"),
                    home,
                    cli_results,
                    cli_errors,
                ),
            )
            for w in range(CLI_WRITERS)
        ]
        for writer in api + cli:
            writer.start()
        for writer in api + cli:
            writer.join(timeout=1200)
    seconds = time.perf_counter() - started

    assert not any(w.is_alive() for w in api + cli)
    assert [f for w in api for f in w.failures] == [] and cli_errors == []
    rows = db_rows(home, "SELECT event_key, count(*) FROM interactions GROUP BY event_key")
    stored = {key: n for key, n in rows if key is not None}
    lost = expected - stored.keys()
    duplicated = {key for key, n in stored.items() if n > 1}
    resent_api = (API_WRITERS // 2) * len(range(0, EVENTS_PER_WRITER, RESEND_EVERY))
    resent_api += (API_WRITERS // 2) * len(range(0, EVENTS_PER_WRITER // BATCH, RESEND_EVERY)) * BATCH
    resent_cli = CLI_WRITERS * (EVENTS_PER_WRITER // CLI_CHUNKS)
    summary = {
        "writers": API_WRITERS + CLI_WRITERS,
        "events_sent_once": len(expected),
        "events_resent": resent_api + resent_cli,
        "stored": len(stored.keys() & expected),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "api_stored": sum(w.stored for w in api),
        "api_duplicates_answered": sum(w.duplicates for w in api),
        "api_retries_after_errors": sum(w.retries for w in api),
        "cli_stored": sum(r["stored"] for r in cli_results),
        "cli_duplicates_reported": sum(r["duplicates"] for r in cli_results),
        "seconds": round(seconds, 1),
    }
    save_figures("load", summary)
    assert lost == set() and duplicated == set()
    assert stored.keys() == expected  # nothing else was written either
    # every request got an answer that accounts for it: stored, or "already stored"
    sent_api = API_WRITERS * EVENTS_PER_WRITER + resent_api
    assert summary["api_stored"] + summary["api_duplicates_answered"] == sent_api
    sent_cli = CLI_WRITERS * EVENTS_PER_WRITER + resent_cli
    assert summary["cli_stored"] + summary["cli_duplicates_reported"] == sent_cli
    if summary["api_retries_after_errors"] == 0:  # (a retried request may find its first try stored)
        assert summary["api_stored"] + summary["cli_stored"] == len(expected)


@sqlite_only
def test_the_write_gate_admits_one_writer_at_a_time_across_forked_workers(tmp_path):
    """The serving writers queue at the gate instead of polling SQLite's lock; a forked worker
    (gunicorn's) gets a gate of its own that still excludes its parent."""
    import multiprocessing

    from recsys.settings import Settings
    from recsys.workspace import Workspace

    ws = Workspace(Settings(home=tmp_path / "home"))
    with ws.writing():  # the parent opens the gate's file before the fork, as gunicorn's parent does
        pass
    entered = multiprocessing.get_context("fork").Value("d", 0.0)

    def child() -> None:
        with ws.writing():
            entered.value = time.time()

    with ws.writing():
        worker = multiprocessing.get_context("fork").Process(target=child)
        worker.start()
        time.sleep(0.5)
        assert entered.value == 0.0, "a forked worker wrote while the parent held the gate"
        released = time.time()
    worker.join(10)
    assert worker.exitcode == 0 and entered.value >= released

    order: list[str] = []
    holding = threading.Event()

    def thread() -> None:
        holding.wait()
        with ws.writing():
            order.append("thread")

    other = threading.Thread(target=thread)
    other.start()
    with ws.writing():
        holding.set()
        time.sleep(0.2)
        order.append("main")
    other.join(10)
    assert order == ["main", "thread"]
    ws.close()
