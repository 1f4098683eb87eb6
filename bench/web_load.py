"""Bounded loopback load against `recsys serve` at 10k and 100k items: latency, errors, nothing lost.

For each catalogue size, builds a workspace: the real flowers5 + poster embeddings from the
recommend bench's base workspace, topped up with variations of them, and 200 simulated users.
Runs `recsys index` and `recsys serve` with only the flags given here (none by default: what a
user gets), times the first answered recommendation after start, then runs ``--clients``
concurrent clients for ``--seconds`` from a separate process: half ask for recommendations of
random users, half POST events with unique idempotency keys (each client with its own token).
Prints p50/p99 per endpoint, errors, and checks every acknowledged event is in the database.
``--impressions both`` serves each catalogue with impression logging off and on, alternating for
``--rounds`` rounds on the same workspace, and prints the on/off ratio of the p50s and p99s (and
checks that every served list's impressions reached the database).

Traffic stays on loopback, is bounded in time, and stops by itself.

    python bench/web_load.py [--clients 8] [--seconds 20] [--items 10000,100000] [--workers N]
                             [--impressions default|on|off|both] [--rounds 1] [--json]
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
from sqlalchemy import func  # noqa: E402

import recsys  # noqa: E402,F401
from recsys import store  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402

BASE = Path.home() / ".cache" / "recsys" / "bench-base"


def build_workspace(home: Path, n_items: int, users: int) -> None:
    """Copy the base workspace's items and vectors, add variations up to ``n_items``, simulate."""
    from recsys.simulate import SimulationConfig, simulate

    build_catalogue(home, n_items)
    with Workspace(Settings(home=home)) as ws:
        simulate(
            ws,
            SimulationConfig(users=users, events_per_user=20, seed=1, visual_temperature=0),
            progress=False,
        )


def build_catalogue(home: Path, n_items: int) -> None:
    """Copy the base workspace's items and vectors and add variations of them up to ``n_items``."""
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


def run_clients(port: int, home: Path, args, tag: str) -> dict:
    """Run ``client_process`` in a process of its own; its results and acknowledged event keys."""
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
    return json.loads(load.stdout.strip().splitlines()[-1])


def latencies(results: list, kind: str) -> dict:
    """Requests, p50/p99 and errors of one kind ("recommend" or "event") of the clients' results."""
    times = [t for k, t, _ in results if k == kind]
    out = {
        "requests": len(times),
        "p50_ms": round(statistics.median(times), 2) if times else None,
        "p99_ms": round(float(np.percentile(times, 99)), 2) if times else None,
        "errors": sum(1 for k, _, st in results if k == kind and st not in (200, 201)),
    }
    failed = sorted({st for k, _, st in results if k == kind and st not in (200, 201)})
    if failed:
        out["error_statuses"] = failed
    return out


def serve_and_load(home: Path, args, *, env: dict | None = None) -> dict:
    """Start `recsys serve` (only the flags given), time its first answer, run the load, stop it."""
    import os

    from recsys import tokens

    with Workspace(Settings(home=home)) as ws:
        probe_token = tokens.create(ws, f"probe{time.time_ns()}", "read")
        with ws.session() as s:
            some_user = s.scalar(store.select(store.User.key).order_by(store.User.id))
    index_cmd = [sys.executable, "-m", "recsys.cli", "index", "--home", str(home)]
    if args.index:
        index_cmd += ["--index", args.index]
    subprocess.run(index_cmd, check=True, capture_output=True)
    port = free_port()
    serve = [sys.executable, "-m", "recsys.cli", "serve", "--home", str(home), "--port", str(port)]
    if args.workers:
        serve += ["--workers", str(args.workers)]
    if args.threads:
        serve += ["--threads", str(args.threads)]
    log = tempfile.TemporaryFile("w+")
    started = time.perf_counter()
    server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    out: dict = {}
    try:
        # time to the first answered recommendation: what the first visitor after a restart waits
        first = None
        while time.perf_counter() - started < 600:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                t0 = time.perf_counter()
                conn.request(
                    "GET",
                    f"/api/users/{some_user}/recommendations?k=10",
                    headers={"Authorization": f"Bearer {probe_token}"},
                )
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    first = (time.perf_counter() - started, (time.perf_counter() - t0) * 1000)
                    break
            except OSError:
                time.sleep(0.05)
        if first is None:
            log.seek(0)
            sys.exit(f"error: the server never answered:\n{log.read()[-2000:]}")
        out["first_response_s"] = round(first[0], 2)
        out["first_request_ms"] = round(first[1], 1)
        tag = f"load{time.time_ns()}"
        data = run_clients(port, home, args, tag)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.seek(0)
        lines = log.read().splitlines()
        chosen = [line for line in lines if line.startswith("serving recsys")]
        out["server_said"] = chosen[0] if chosen else ""
        errors = [n for n, line in enumerate(lines) if " 500 on " in line]
        if errors:  # the first server error, with its traceback, for whoever reads the run
            out["server_error"] = "\n".join(lines[errors[0] : errors[0] + 40])
        log.close()
    with Workspace(Settings(home=home)) as ws, ws.session() as s:
        stored = set(
            s.scalars(
                store.select(store.Interaction.event_key).where(store.Interaction.event_key.like(f"{tag}-%"))
            )
        )
        out["impressions_in_database"] = s.scalar(store.select(func.count()).select_from(store.Impression))
    for kind in ("recommend", "event"):
        out[kind] = latencies(data["results"], kind)
    out["events_acknowledged"] = len(data["acked"])
    out["events_in_database"] = len(stored)
    out["events_lost"] = len(set(data["acked"]) - stored)
    return out


def overhead(n_items: int, runs: list[dict], quiet: bool) -> dict:
    """On/off ratios of the recommendation p50 and p99, per round and their medians; and whether
    every list the "on" servers answered left its impressions in the database."""
    off = [r for r in runs if r["impressions"] == "off"]
    on = [r for r in runs if r["impressions"] == "on"]
    ratios = {
        q: [round(b["recommend"][q] / a["recommend"][q], 3) for a, b in zip(off, on, strict=True)]
        for q in ("p50_ms", "p99_ms")
    }
    logged, before = [], 0
    for run in runs:  # impressions only grow in "on" runs; each list shows 10 items
        grown = run["impressions_in_database"] - before
        before = run["impressions_in_database"]
        if run["impressions"] == "on":
            lists = run["recommend"]["requests"] - run["recommend"]["errors"] + 1  # + the first probe
            logged.append({"lists": lists, "impressions": grown, "expected": 10 * lists})
    result = {
        "items": n_items,
        "impression_overhead": {
            "recommend_p50_ms_off": [r["recommend"]["p50_ms"] for r in off],
            "recommend_p50_ms_on": [r["recommend"]["p50_ms"] for r in on],
            "recommend_p99_ms_off": [r["recommend"]["p99_ms"] for r in off],
            "recommend_p99_ms_on": [r["recommend"]["p99_ms"] for r in on],
            "p50_ratio_on_off": ratios["p50_ms"],
            "p99_ratio_on_off": ratios["p99_ms"],
            "median_p50_ratio": statistics.median(ratios["p50_ms"]),
            "median_p99_ratio": statistics.median(ratios["p99_ms"]),
            "impressions_logged": logged,
        },
    }
    if not quiet:
        for key, value in result["impression_overhead"].items():
            print(f"{key:24s} {value}")
        print()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--items", default="10000,100000", help="Catalogue sizes, comma-separated.")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--index", help="recsys index --index (default: none given, i.e. auto).")
    parser.add_argument("--workers", type=int, help="recsys serve --workers (default: none given).")
    parser.add_argument("--threads", type=int, help="recsys serve --threads (default: none given).")
    parser.add_argument(
        "--impressions",
        choices=["default", "on", "off", "both"],
        default="default",
        help="Impression logging of the server (RECSYS_LOG_IMPRESSIONS); both: off and on, alternating.",
    )
    parser.add_argument("--rounds", type=int, default=1, help="--impressions both: off/on pairs per size.")
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

    runs = []
    for n_items in [int(n) for n in args.items.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            build_workspace(home, n_items, args.users)
            settings = {"default": [None], "on": ["1"], "off": ["0"], "both": ["0", "1"] * args.rounds}
            pairs = []
            for logging in settings[args.impressions]:
                env = {} if logging is None else {"RECSYS_LOG_IMPRESSIONS": logging}
                run = {
                    "items": n_items,
                    "clients": args.clients,
                    "seconds": args.seconds,
                    "index": args.index or "(default)",
                    "workers": args.workers or "(default)",
                    "impressions": {"0": "off", "1": "on"}.get(logging, "(default: on)"),
                    **serve_and_load(home, args, env=env),
                }
                runs.append(run)
                if not args.json:
                    for key, value in run.items():
                        print(f"{key:24s} {value}")
                    print()
                pairs.append(run)
            if args.impressions == "both":
                runs.append(overhead(n_items, pairs, args.json))
    if args.json:
        print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
