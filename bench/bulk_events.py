"""Events per second stored through `POST /api/events` in batches, beside `recsys record --csv`.

Builds a workspace of ``--items`` catalogue rows (with random vectors: serving needs some) in SQLite,
or in the PostgreSQL database ``--db-url`` names (its tables are dropped first: give it a database
of its own). Starts `recsys serve` with no flags but one setting: ``RECSYS_LIMIT_API_WRITES`` raised
to "100000000 per minute", since the default write limit (60,000 events a minute per token) is the
very thing this bench would otherwise measure. ``--clients`` threads of one separate process then
post batches of ``--batch`` events (built before the clock starts; unique event keys, 1,000 users,
random items, past timestamps), each thread on its own keep-alive connection, for ``--seconds``.
Every event a batch answered "stored" must be in the database afterwards (``lost``).

Then the same number of events, as a CSV, through `recsys record --csv` (one process, no server).

    python bench/bulk_events.py [--items 10000] [--batch 1000] [--clients 4] [--seconds 20]
                                [--db-url postgresql+psycopg://...] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from web_load import free_port  # noqa: E402

#: The write limit the server runs with here (see the docstring).
WRITE_LIMIT = "100000000 per minute"
USERS = 1000


def build_workspace(home: Path, db_url: str | None, n_items: int) -> dict:
    """Catalogue rows, a write token; the settings' environment for the server and the CLI."""
    from sqlalchemy import create_engine, text

    from recsys import store, tokens
    from recsys.settings import Settings
    from recsys.workspace import Workspace

    if db_url:  # a clean database: the tables of an earlier run would be migrated, not replaced
        engine = create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    settings = Settings(home=home, db_url=db_url)
    with Workspace(settings) as ws:
        now = store.utcnow()
        rows = [
            {"key": f"item/{n}", "image_path": f"item/{n}.jpg", "created_at": now} for n in range(n_items)
        ]
        with ws.session() as s, s.begin():
            store.insert_ignoring_duplicates(s, store.Item, rows)
            ids = list(s.scalars(store.select(store.Item.id).order_by(store.Item.id)))
            # vectors, because `recsys serve` needs some; their values do not matter to writes
            vectors = np.random.default_rng(0).normal(size=(len(ids), 1280)).astype(np.float32)
            store.write_embeddings(
                s, "efficientnet-lite0", ids, vectors / np.linalg.norm(vectors, axis=1)[:, None]
            )
        secret = tokens.create(ws, "bulk", "write")
    env = {**os.environ, "RECSYS_HOME": str(home), "RECSYS_LIMIT_API_WRITES": WRITE_LIMIT}
    if db_url:
        env["RECSYS_DB_URL"] = db_url
    return {"env": env, "token": secret}


def batches(tag: str, n_batches: int, size: int, n_items: int, seed: int) -> list[bytes]:
    """JSON bodies of ``size`` events each, keyed ``<tag>-<batch>-<n>``."""
    rng = random.Random(seed)
    bodies = []
    for b in range(n_batches):
        events = [
            {
                "user": f"user{rng.randrange(USERS)}",
                "item": f"item/{rng.randrange(n_items)}",
                "event": "view",
                "at": 1_600_000_000 + rng.randrange(100_000_000),
                "event_key": f"{tag}-{b}-{n}",
            }
            for n in range(size)
        ]
        bodies.append(json.dumps(events).encode())
    return bodies


def client_process(port: int, token: str, clients: int, seconds: float, bodies_path: str) -> None:
    """Runs in its own process: ``clients`` threads posting the prepared batches, closed loop."""
    bodies = json.loads(Path(bodies_path).read_text())
    queue = iter(range(len(bodies)))
    lock = threading.Lock()
    results: list[tuple[float, int, int, list[str]]] = []  # (ms, status, stored, keys stored)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    stop = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < stop:
            with lock:
                b = next(queue, None)
            if b is None:
                break
            body = bodies[b].encode()
            start = time.perf_counter()
            try:
                conn.request("POST", "/api/events", body, headers)
                response = conn.getresponse()
                answer = json.loads(response.read())
                status = response.status
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status, answer = 0, {}
            ms = (time.perf_counter() - start) * 1000
            keys = []
            if status == 200:
                sent = json.loads(body)
                keys = [
                    e["event_key"]
                    for e, r in zip(sent, answer["results"], strict=True)
                    if r["result"] == "stored"
                ]
            with lock:
                results.append((ms, status, len(keys), keys))
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    print(json.dumps({"elapsed": elapsed, "results": results}))


def wait_until_up(port: int, server: subprocess.Popen, log) -> None:
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline and server.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    log.seek(0)
    sys.exit(f"error: the server never answered:\n{log.read()[-2000:]}")


def through_api(home: Path, ws: dict, args, tag: str) -> dict:
    n_batches = int(args.seconds * 40_000 / args.batch) + 10  # more than 40,000 events/s would need
    bodies_path = home / "bodies.json"
    bodies_path.write_text(
        json.dumps([b.decode() for b in batches(tag, n_batches, args.batch, args.items, 1)])
    )
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    cmd = [sys.executable, "-m", "recsys.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ws["env"])
    try:
        wait_until_up(port, server, log)
        load = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client",
                str(port),
                ws["token"],
                str(args.clients),
                str(args.seconds),
                str(bodies_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        data = json.loads(load.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.seek(0)
        said = [line for line in log.read().splitlines() if line.startswith("serving recsys")]
        log.close()
    results = data["results"]
    acked = {k for *_, keys in results for k in keys}
    stored_events = sum(n for _, _, n, _ in results)
    in_db = keys_in_database(home, ws, tag)
    return {
        "server_said": said[0] if said else "",
        "batches": len(results),
        "errors": sum(1 for _, status, _, _ in results if status != 200),
        "events_stored": stored_events,
        "events_per_s": round(stored_events / data["elapsed"]),
        "batch_p50_ms": round(statistics.median(ms for ms, *_ in results), 1) if results else None,
        "lost": len(acked - in_db),
    }


def keys_in_database(home: Path, ws: dict, prefix: str) -> set[str]:
    from recsys import store
    from recsys.settings import Settings
    from recsys.workspace import Workspace

    with Workspace(Settings(home=home, db_url=ws["env"].get("RECSYS_DB_URL"))) as w, w.session() as s:
        query = store.select(store.Interaction.event_key).where(
            store.Interaction.event_key.like(f"{prefix}-%")
        )
        return set(s.scalars(query))


def through_csv(home: Path, ws: dict, args, events: int) -> dict:
    """The same number of events, imported by `recsys record --csv` from one file."""
    rng = random.Random(2)
    path = home / "events.csv"
    with path.open("w") as fh:
        fh.write("user,item,event,timestamp,weight,event_key\n")
        for n in range(events):
            fh.write(
                f"user{rng.randrange(USERS)},item/{rng.randrange(args.items)},view,"
                f"{1_600_000_000 + rng.randrange(100_000_000)},,csv-{n}\n"
            )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "record", "--csv", str(path), "--json"],
        capture_output=True,
        text=True,
        env=ws["env"],
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: recsys record --csv failed: {proc.stderr[-500:]}")
    stored = json.loads(proc.stdout)["stored"]
    return {
        "events": events,
        "stored": stored,
        "seconds": round(seconds, 1),
        "events_per_s": round(stored / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--db-url", help="A PostgreSQL database of the bench's own (default: SQLite).")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, token, clients, seconds, bodies = args.client
        client_process(int(port), token, int(clients), float(seconds), bodies)
        return

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        ws = build_workspace(home, args.db_url, args.items)
        api = through_api(home, ws, args, f"bulk{time.time_ns()}")
        csv = through_csv(home, ws, args, max(api["events_stored"], args.batch))
    out = {
        "database": "postgresql" if args.db_url else "sqlite",
        "items": args.items,
        "batch": args.batch,
        "clients": args.clients,
        "seconds": args.seconds,
        **api,
        "record_csv": csv,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for key, value in out.items():
        print(f"{key:16s} {value}")


if __name__ == "__main__":
    main()
