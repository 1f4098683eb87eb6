"""What a long history costs a recommendation, through the real server: a 20-event user against a
20,000-event one, with the history bound (``RECSYS_HISTORY_LIMIT``, default 500) and without it.

Builds a workspace of ``--items`` items (the real flowers5 + poster vectors of the recommend bench's
base workspace, topped up with variations of them, as ``web_load.py`` does), gives one user 20 events
and another 20,000 (inserted in bulk: the recording path is measured elsewhere), then serves it
twice, the bound as set and as good as off, and asks each user for 10 recommendations ``--requests``
times, one request at a time, alternating. Prints the p50 and p99 of each and the long/short ratio.

    python bench/history_cost.py [--items 10000] [--requests 200] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402
from web_load import build_catalogue, free_port  # noqa: E402

import recsys  # noqa: E402,F401
from recsys import store, tokens  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402

USERS = {"short": 20, "long": 20_000}


def write_histories(home: Path) -> str:
    """The two users' events (random items, one a minute); returns a read token."""
    rng = np.random.default_rng(0)
    with Workspace(Settings(home=home)) as ws:
        with ws.session() as s:
            item_ids = np.array(s.scalars(select(store.Item.id)).all())
        start = store.utcnow() - timedelta(days=30)
        with ws.engine.begin() as conn:
            for user, n in USERS.items():
                user_id = conn.execute(
                    insert(store.User).values(key=user, created_at=start).returning(store.User.id)
                ).scalar_one()
                picked = rng.choice(item_ids, size=n)
                conn.execute(
                    insert(store.Interaction),
                    [
                        {
                            "user_id": user_id,
                            "item_id": int(i),
                            "event": "view",
                            "ts": start + timedelta(minutes=m),
                        }
                        for m, i in enumerate(picked)
                    ],
                )
        return tokens.create(ws, "bench", "read")


def serve_and_time(home: Path, token: str, requests: int, env: dict) -> dict:
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "serve", "--home", str(home), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    times: dict[str, list[float]] = {user: [] for user in USERS}
    try:
        deadline = time.time() + 300
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/api/health")
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    log.seek(0)
                    sys.exit(f"error: the server did not start:\n{log.read()[-2000:]}")
                time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in range(requests + 10):  # the first 10 of each warm up
            for user in USERS:
                started = time.perf_counter()
                conn.request(
                    "GET",
                    f"/api/users/{user}/recommendations?k=10",
                    headers={"Authorization": f"Bearer {token}"},
                )
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    sys.exit(f"error: {user}: HTTP {response.status}")
                if n >= 10:
                    times[user].append((time.perf_counter() - started) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=60)
    out = {
        user: {
            "events": USERS[user],
            "p50_ms": round(statistics.median(t), 2),
            "p99_ms": round(np.percentile(t, 99), 2),
        }
        for user, t in times.items()
    }
    out["long_over_short_p50"] = round(out["long"]["p50_ms"] / out["short"]["p50_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        build_catalogue(home, args.items)
        token = write_histories(home)
        subprocess.run(
            [sys.executable, "-m", "recsys.cli", "index", "--home", str(home)],
            check=True,
            capture_output=True,
        )
        bound = os.environ.get("RECSYS_HISTORY_LIMIT", str(Settings().history_limit))
        result = {
            "items": args.items,
            f"history_limit {bound}": serve_and_time(
                home, token, args.requests, {"RECSYS_HISTORY_LIMIT": bound}
            ),
            "no bound": serve_and_time(home, token, args.requests, {"RECSYS_HISTORY_LIMIT": "1000000"}),
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, row in result.items():
            print(name, json.dumps(row))


if __name__ == "__main__":
    main()
