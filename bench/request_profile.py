"""Where one API request's CPU goes: framework, guards, database, search, ranking, JSON, logging.

Builds the 10k-item workspace of ``bench/web_load.py`` (real embeddings and their variations, 200
simulated users) plus users with 20-, 150- and 1,000-event histories, makes the app as
`recsys serve` does (``web.server.make_app``: guards, limiter counters in the workspace's file,
access log on), and calls it in-process through WSGI, one request at a time: ``--requests``
recommendations, then as many single events (unique keys). No HTTP server and no client: what
the server adds is ``bench/web_capacity.py``'s bare-app floor.

Per kind it prints the CPU milliseconds per request (``time.process_time``, without the sampler),
then py-spy's split of as many more (``CATEGORIES``: a sample goes to the innermost frame that
belongs to guards, logging, JSON, database, search, ranking or the framework; the impression log's
own thread is "impressions"). Needs py-spy (``pip install py-spy``).

    python bench/request_profile.py [--items 10000] [--requests 2000] [--json]

``--code DIR`` profiles another checkout's ``recsys`` and ``web`` (the "before" of a change).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (category, path fragments of the frames it owns). A sample goes to the innermost frame that
#: belongs to one: a rate-limit counter's SQL is the guards', a history query the database's.
CATEGORIES = [
    (
        "guards",
        (
            "flask_limiter/",
            "/limits/",
            "web/counters.py",
            "flask_wtf/",
            "web/guards.py",
            "web/identity.py",
            "recsys/tokens.py",
            "itsdangerous/",
            "flask/sessions.py",
            "/hmac.py",
            "/hashlib.py",
        ),
    ),
    ("logging", ("/logging/", "web/access.py")),
    ("json", ("/json/", "orjson")),
    (
        "database",
        (
            "sqlalchemy/",
            "/sqlite3/",
            "psycopg",
            "recsys/store.py",
            "recsys/interactions.py",
            "recsys/workspace.py",
        ),
    ),
    ("search", ("faiss/", "recsys/index.py", "recsys/space.py")),
    (
        "ranking",
        (
            "recsys/serving/",
            "recsys/strategies/",
            "recsys/recommend.py",
            "numpy/",
            "recsys/events.py",
            "recsys/impressions.py",
            "recsys/experiments.py",
        ),
    ),
    ("framework", ("flask/", "werkzeug/", "web/", "gunicorn/")),
]
#: Frames that only pass a call on (context-local proxies, decorators' plumbing): looked through.
TRANSPARENT = (
    "werkzeug/local.py",
    "flask/globals.py",
    "/functools.py",
    "/contextlib.py",
    "/typing.py",
    "<frozen",
    "/abc.py",
    "/enum.py",
    "/threading.py",
)


DETAIL = False


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        sys.exit("error: this bench samples with py-spy: pip install py-spy")
    return found


def sampled(run, rate: int) -> Counter:
    """Run ``run()`` under py-spy (an outside sampler: it sees CPU where it is spent, where a thread
    in the process would only get the GIL when sqlite or faiss let it go) and tally categories."""
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        spy = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(os.getpid()),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "-o",
                raw.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)  # attached
        run()
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        tally: Counter = Counter()
        for line in Path(raw.name).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            files = [frame.rpartition("(")[2].rpartition(":")[0] for frame in stack.split(";")]
            tally[classify(files[::-1])] += int(count)
    if not tally:
        sys.exit(f"error: py-spy recorded nothing: {err.decode()[-500:]}")
    return tally


def classify(files: list[str]) -> str:
    """The category of a stack (innermost frame first)."""
    if not any("flask/app.py" in f for f in files):
        if any("recsys/impressions.py" in f for f in files):
            return "impressions"  # the log's own thread, writing what the lists showed
        return "outside"  # the bench's own loop, between requests
    for f in files:
        if any(t in f for t in TRANSPARENT):
            continue
        for name, fragments in CATEGORIES:
            for frag in fragments:
                if frag in f:
                    return f"{name}:{frag}" if DETAIL else name
    return "framework"


def build(home: Path, n_items: int) -> tuple[list[str], list[str], list[str]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import web_load

    from recsys import store, tokens
    from recsys.interactions import NewEvent, record
    from recsys.settings import Settings
    from recsys.workspace import Workspace

    web_load.build_workspace(home, n_items, 200)
    with Workspace(Settings(home=home)) as ws:
        with ws.session() as s:
            items = list(s.scalars(store.select(store.Item.key).order_by(store.Item.id)))
        users = []
        for length in (20, 150, 1000):
            for u in range(10):
                user = f"h{length}-{u}"
                events = [
                    NewEvent(
                        user, items[(u * 7919 + n * 104729) % len(items)], "view", 1_600_000_000 + n * 60
                    )
                    for n in range(length)
                ]
                record(ws, events)
                users.append(user)
        # one token per 100 requests: the per-token limits (200 reads/s) must not refuse this loop
        secrets = [tokens.create(ws, f"profile-{n}", "write") for n in range(64)]
    return users, items, secrets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second.")
    parser.add_argument("--code", help="A checkout whose recsys and web to profile (default: this one).")
    parser.add_argument("--detail", action="store_true", help="Split each category by module.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    global DETAIL
    DETAIL = args.detail
    sys.path.insert(0, str(Path(args.code).resolve() if args.code else ROOT))
    import logging

    from werkzeug.test import EnvironBuilder

    from recsys.settings import Settings
    from web import server

    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())  # the access log, formatted, unseen
    logging.getLogger("recsys").setLevel(logging.INFO)
    import recsys

    out: dict = {"items": args.items, "code": str(Path(recsys.__file__).resolve().parent.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        users, items, secrets = build(home, args.items)
        app = server.make_app(Settings(home=home), False, models=False)
        auths = [{"Authorization": f"Bearer {secret}"} for secret in secrets]
        n = args.requests

        def recommend(i: int) -> dict:
            return EnvironBuilder(
                path=f"/api/users/{users[i % len(users)]}/recommendations",
                query_string="k=10",
                headers=auths[i % len(auths)],
            ).get_environ()

        def event(i: int) -> dict:
            body = json.dumps(
                {
                    "user": users[i % len(users)],
                    "item": items[(i * 31) % len(items)],
                    "event": "view",
                    "event_key": f"p{time.time_ns()}-{i}",
                }
            )
            return EnvironBuilder(
                path="/api/events",
                method="POST",
                data=body,
                headers=auths[i % len(auths)],
                content_type="application/json",
            ).get_environ()

        def call(environ: dict) -> int:
            status = []
            body = app(environ, lambda s, h, exc=None: status.append(s))
            b"".join(body)
            if hasattr(body, "close"):
                body.close()
            return int(status[0][:3])

        for kind, make in (("recommend", recommend), ("event", event)):
            environs = [make(i) for i in range(2 * n + 200)]
            for environ in environs[:200]:  # warm-up
                call(environ)
            time.sleep(1.1)  # the next second's budgets
            started = time.process_time()
            statuses = Counter(call(environ) for environ in environs[200 : 200 + n])
            cpu_ms = (time.process_time() - started) * 1000 / n
            rest = environs[200 + n :]
            tally = sampled(lambda rest=rest: [call(environ) for environ in rest], args.rate)
            tally.pop("outside", None)
            total = sum(tally.values())
            out[kind] = {
                "cpu_ms_per_request": round(cpu_ms, 3),
                "statuses": dict(statuses),
                "share": {
                    name: round(n / total, 3) for name, n in sorted(tally.items(), key=lambda kv: -kv[1])
                }
                if args.detail
                else {
                    name: round(tally.get(name, 0) / total, 3) for name in [*dict(CATEGORIES), "impressions"]
                },
            }
            out[kind]["cpu_ms_by_part"] = {k: round(v * cpu_ms, 3) for k, v in out[kind]["share"].items()}
        app.extensions["recsys"].recommender.impressions.flush()
        app.extensions["recsys"].workspace.close()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for kind in ("recommend", "event"):
        r = out[kind]
        parts = "  ".join(f"{k} {v:.3f}" for k, v in r["cpu_ms_by_part"].items())
        print(f"{kind:9s} {r['cpu_ms_per_request']:.3f} CPU ms/request {r['statuses']}:  {parts}")


if __name__ == "__main__":
    main()
