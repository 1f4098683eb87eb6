"""The floor under `bench/web_load.py`: the same load against servers that do less and less work.

Three servers, each with the processes and threads `recsys serve` chooses (``web.server.plan``:
one gunicorn worker per core; this bench uses gunicorn even where `recsys serve` would pick
waitress, on one core or Windows), on the same 10k-item workspace, under the same client
process as web_load.py (``--clients`` keep-alive connections, half asking for recommendations,
half posting events, for ``--seconds``):

- ``bare``: a bare Flask app with the two routes, answering a fixed JSON body (no token, no limit,
  no database): what Flask, gunicorn, the loopback and the Python client cost on this machine;
- ``stack``: the recsys app with every guard on (token, rate limit, CSRF, headers, access log),
  where recommending returns one real answer computed at start (no search, no query, no
  impressions) and recording one real event's report (no write): what the web layer costs,
  before any work;
- ``recsys``: `recsys serve` itself, as web_load.py runs it.

The load is a closed loop: each client sends its next request when the last is answered, and the
clients share the cores with the server. So the latencies follow the CPU each request costs,
and the goals (recommendations p50 <= 10 ms, events p50 <= 5 ms) need the answered rate printed
as ``needed_per_s`` (with an even number of clients). Each server's rate of answers (200 or 201;
errors are counted apart) and the share of the needed rate it reaches are printed beside its
p50/p99s. Traffic stays on loopback and stops by itself.

    python bench/web_floor.py [--clients 8] [--seconds 20] [--items 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import web_load  # noqa: E402

from recsys.settings import Settings  # noqa: E402

#: The goals' p50s, in seconds: (recommendations, events).
GOALS = (0.010, 0.005)


def bare_app():
    """Flask and nothing else: the two routes of the load, each a fixed JSON answer."""
    from flask import Flask, jsonify

    app = Flask("bare")
    items = [{"item_id": n, "key": f"item/{n}", "score": 0.5, "because": []} for n in range(10)]

    @app.get("/api/users/<path:user>/recommendations")
    def recommendations(user: str):
        return jsonify(user=user, items=items)

    @app.post("/api/events")
    def events():
        return jsonify(stored=True, duplicate=False), 201

    return app


def stack_app(settings: Settings):
    """The recsys app, guards and all, whose recommender answers without working."""
    from recsys import store
    from web import server

    app = server.make_app(settings, False, models=False)
    recommender = app.extensions["recsys"].recommender
    with recommender.workspace.session() as s:
        user = s.scalar(store.select(store.User.key).order_by(store.User.id))
        item = s.scalar(store.select(store.Item.key).order_by(store.Item.id))
    # computed without logging impressions: the log's thread must not start before the fork
    impressions, recommender.impressions = recommender.impressions, None
    answer = recommender.recommend(user, 10)
    recommender.impressions = impressions
    report = recommender.record(user, item, "view", event_key=f"floor-{time.time_ns()}")
    recommender.recommend = lambda *args, **kwargs: answer
    recommender.record = lambda *args, **kwargs: report
    return app


def serve(mode: str, home: Path, port: int) -> None:
    """Runs in its own process: serve ``mode`` with the server `recsys serve` would choose."""
    from web import server

    chosen = server.plan(None, None)
    if mode == "stack":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        logging.getLogger("recsys").setLevel(logging.INFO)  # the access log, as `recsys serve`
        app = stack_app(Settings(home=home))
        print(f"serving {mode} with {chosen}", flush=True)
        server.serve_recsys_with_gunicorn(app, "127.0.0.1", port, chosen)
        return
    print(f"serving {mode} with {chosen}", flush=True)
    server.serve_with_gunicorn(bare_app(), server.gunicorn_options("127.0.0.1", port, chosen))


def load_against(mode: str, home: Path, args) -> dict:
    """Start the ``mode`` server, wait for it, run the load client, stop the server."""
    import http.client

    port = web_load.free_port()
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, str(home), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.perf_counter() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/api/openapi.json")
                conn.getresponse().read()
                break
            except OSError:
                if time.perf_counter() > deadline or server.poll() is not None:
                    log.seek(0)
                    sys.exit(f"error: the {mode} server never answered:\n{log.read()[-2000:]}")
                time.sleep(0.1)
        results = web_load.run_clients(port, home, args, f"floor{time.time_ns()}")["results"]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    return summary(mode, results, args)


def summary(mode: str, results: list, args) -> dict:
    out: dict = {
        "server": mode,
        **{kind: web_load.latencies(results, kind) for kind in ("recommend", "event")},
    }
    answered = sum(1 for _, _, status in results if status in (200, 201))
    out["answered_per_s"] = round(answered / args.seconds)
    out["needed_per_s"] = round(sum(args.clients / 2 / goal for goal in GOALS))
    out["share_of_needed"] = round(out["answered_per_s"] / out["needed_per_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        mode, home, port = args.serve
        serve(mode, Path(home), int(port))
        return

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        web_load.build_workspace(home, args.items, args.users)
        subprocess.run(
            [sys.executable, "-m", "recsys.cli", "index", "--home", str(home)],
            check=True,
            capture_output=True,
        )
        for mode in ("bare", "stack"):
            runs.append(load_against(mode, home, args))
        args.index = args.workers = args.threads = None  # `recsys serve` with no flags
        real = web_load.serve_and_load(home, args)
        answered = sum(real[kind]["requests"] - real[kind]["errors"] for kind in ("recommend", "event"))
        runs.append(
            {
                "server": "recsys",
                "recommend": real["recommend"],
                "event": real["event"],
                "answered_per_s": round(answered / args.seconds),
                "needed_per_s": runs[0]["needed_per_s"],
            }
        )
        runs[-1]["share_of_needed"] = round(runs[-1]["answered_per_s"] / runs[-1]["needed_per_s"], 2)
    if args.json:
        print(json.dumps(runs, indent=2))
        return
    head = f"{'server':8s} {'answered/s':>10s} {'needed/s':>9s} {'share':>6s}"
    print(f"{head}  recommend p50/p99   events p50/p99   errors")
    for run in runs:
        r, e = run["recommend"], run["event"]
        print(
            f"{run['server']:8s} {run['answered_per_s']:>10d} {run['needed_per_s']:>9d} "
            f"{run['share_of_needed']:>6.2f}  {r['p50_ms']} / {r['p99_ms']} ms   "
            f"{e['p50_ms']} / {e['p99_ms']} ms   {r['errors'] + e['errors']}"
        )


if __name__ == "__main__":
    main()
