"""Bounded loopback load against `recsys serve` with 10k items: latency, errors, nothing lost.

Builds (once, cached) a workspace of 10,000 items: the real flowers5 + poster embeddings from the
recommend bench's base workspace, topped up with structure-keeping variations of them. Starts
`recsys serve` (waitress) on 127.0.0.1, then runs ``--clients`` concurrent clients for
``--seconds`` from a separate process: half ask for recommendations of random simulated users,
half POST events with unique idempotency keys. Prints p50/p99 per endpoint, the error count, and
checks that every event the server acknowledged is in the database afterwards.

Traffic stays on loopback, is bounded in time, and stops by itself.

    python bench/web_load.py [--clients 8] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import recsys  # noqa: E402,F401
from recsys import store  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402

BASE = Path.home() / ".cache" / "recsys" / "bench-base"


def build_workspace(home: Path, n_items: int, users: int) -> None:
    """Copy the base workspace's items and vectors, add variations up to ``n_items``, simulate."""
    from recsys.simulate import SimulationConfig, simulate

    if not (BASE / "recsys.db").exists():
        sys.exit("error: run bench/recommend_latency.py once first (it builds the base workspace)")
    shutil.copytree(BASE, home)
    for index_file in (home / "indexes").glob("*"):
        index_file.unlink()
    rng = np.random.default_rng(0)
    with Workspace(Settings(home=home)) as ws:
        with ws.session() as s:
            ids, matrix = store.load_embeddings(s, "efficientnet-lite0")
            items = {r.id: r for r in s.scalars(select_items())}
        extra = n_items - len(ids)
        rows, vectors = [], []
        for n in range(max(0, extra)):
            src = int(rng.integers(0, len(ids)))
            base_item = items[int(ids[src])]
            v = matrix[src] + rng.normal(0, 0.3 / np.sqrt(matrix.shape[1]), matrix.shape[1]).astype(
                np.float32
            )
            vectors.append(v / np.linalg.norm(v))
            rows.append(
                {
                    "key": f"variant/{n}",
                    "image_path": base_item.image_path,
                    "label": base_item.label,
                    "title": f"variant of {base_item.title}",
                    "created_at": store.utcnow(),
                }
            )
        with ws.session() as s, s.begin():
            store.insert_ignoring_duplicates(s, store.Item, rows)
            new_ids = dict(
                s.execute(
                    store.select(store.Item.key, store.Item.id).where(store.Item.key.like("variant/%"))
                ).all()
            )
            store.write_embeddings(
                s,
                "efficientnet-lite0",
                [new_ids[r["key"]] for r in rows],
                np.array(vectors, dtype=np.float32),
            )
        simulate(
            ws,
            SimulationConfig(users=users, events_per_user=20, seed=1, visual_temperature=0),
            progress=False,
        )


def select_items():
    from sqlalchemy import select

    return select(store.Item)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_process(
    port: int, seconds: float, clients: int, users: list[str], items: list[str], tag: str, keys: list[str]
) -> None:
    """Runs in its own process: ``clients`` threads, each on one keep-alive connection and token."""
    results: list[tuple[str, float, int]] = []
    acked: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(n: int) -> None:
        rng = random.Random(n)
        auth = {"Authorization": f"Bearer {keys[n]}"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while time.perf_counter() < stop:
            kind = "recommend" if n % 2 == 0 else "event"
            start = time.perf_counter()
            try:
                if kind == "recommend":
                    conn.request("GET", f"/api/users/{rng.choice(users)}/recommendations?k=10", headers=auth)
                else:
                    key = f"{tag}-{n}-{i}"
                    body = json.dumps(
                        {
                            "user": rng.choice(users),
                            "item": rng.choice(items),
                            "event": "view",
                            "event_key": key,
                        }
                    )
                    conn.request("POST", "/api/events", body, {"Content-Type": "application/json", **auth})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                results.append((kind, elapsed, status))
                if kind == "event" and status == 201:
                    acked.append(key)
            i += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"results": results, "acked": acked}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--index", default="auto", help="Index type built before serving (recsys index).")
    parser.add_argument("--workers", type=int, default=1, help="recsys serve --workers.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--client", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # the load-generator process
        port, seconds, clients, tag, home = args.client
        from recsys import tokens

        with Workspace(Settings(home=Path(home))) as ws:
            with ws.session() as s:
                users = list(s.scalars(store.select(store.User.key)))
                items = list(s.scalars(store.select(store.Item.key)))
            keys = [tokens.create(ws, f"{tag}-{n}", "write") for n in range(int(clients))]  # one per client
        client_process(int(port), float(seconds), int(clients), users, items, tag, keys)
        return

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        build_workspace(home, args.items, args.users)
        subprocess.run(
            [sys.executable, "-m", "recsys.cli", "index", "--index", args.index, "--home", str(home)],
            check=True,
            capture_output=True,
        )
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recsys.cli",
                "serve",
                "--home",
                str(home),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/api/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.3)
            tag = f"load{int(time.time())}"
            load = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    str(port),
                    str(args.seconds),
                    str(args.clients),
                    tag,
                    str(home),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
        data = json.loads(load.stdout.strip().splitlines()[-1])
        with Workspace(Settings(home=home)) as ws, ws.session() as s:
            stored = set(
                s.scalars(
                    store.select(store.Interaction.event_key).where(
                        store.Interaction.event_key.like(f"{tag}-%")
                    )
                )
            )
    results = data["results"]
    out: dict = {
        "clients": args.clients,
        "seconds": args.seconds,
        "items": args.items,
        "index": args.index,
        "workers": args.workers,
    }
    for kind in ("recommend", "event"):
        times = [t for k, t, _ in results if k == kind]
        out[kind] = {
            "requests": len(times),
            "p50_ms": round(statistics.median(times), 2) if times else None,
            "p99_ms": round(float(np.percentile(times, 99)), 2) if times else None,
            "errors": sum(1 for k, _, st in results if k == kind and st not in (200, 201)),
        }
    out["events_acknowledged"] = len(data["acked"])
    out["events_in_database"] = len(stored)
    out["events_lost"] = len(set(data["acked"]) - stored)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:22s} {value}")


if __name__ == "__main__":
    main()
