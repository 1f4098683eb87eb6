"""How long does `recsys evaluate` take on 100,000 users x 10,000 items x every strategy?

Builds a workspace of ``--items`` items (the real flowers5 + poster vectors of the recommend
bench's base workspace, topped up with variations of them) and ``--users`` simulated users
(``recsys.simulate.generate``, written in bulk: the recording path is measured elsewhere), trains
the two-tower for ``--epochs`` on the evaluation's split (not timed), then times the `recsys
evaluate` command end to end, every strategy in one run: random, popular, average, ease, als,
two-tower. Prints the time per strategy (fitting the peers included) and recall@10.

    python bench/evaluate_runtime.py [--users 100000] [--items 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import insert, select  # noqa: E402
from web_load import build_catalogue  # noqa: E402

import recsys  # noqa: E402,F401
from recsys import store  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.simulate import SimulationConfig, generate  # noqa: E402
from recsys.space import center_and_normalise  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402


def write_events(home: Path, users: int, events_per_user: int) -> int:
    """Simulated tastes (visual and by label) for ``users``, inserted in bulk."""
    with Workspace(Settings(home=home)) as ws:
        with ws.session() as s:
            items = s.execute(
                select(store.Item.id, store.Item.key, store.Item.label).order_by(store.Item.id)
            ).all()
            _, matrix = store.load_embeddings(s, "efficientnet-lite0")
        vectors = center_and_normalise(matrix, matrix.mean(axis=0))
        events = generate(
            [(k, lab) for _, k, lab in items],
            SimulationConfig(users=users, events_per_user=events_per_user, seed=7),
            vectors,
        )
        ids = {k: i for i, k, _ in items}
        names = sorted({e.user for e in events})
        with ws.engine.begin() as conn:
            conn.execute(insert(store.User), [{"key": u, "created_at": store.utcnow()} for u in names])
            user_ids = dict(conn.execute(select(store.User.key, store.User.id)).all())
            rows = [
                {"user_id": user_ids[e.user], "item_id": ids[e.item], "event": e.event, "ts": e.ts}
                for e in events
            ]
            for start in range(0, len(rows), 50_000):
                conn.execute(insert(store.Interaction), rows[start : start + 50_000])
    return len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--events-per-user", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=1, help="Two-tower training epochs (not timed).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "recsys.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        t0 = time.perf_counter()
        build_catalogue(home, args.items)
        n_events = write_events(home, args.users, args.events_per_user)
        built = time.perf_counter() - t0
        subprocess.run(
            [*cli, "train", "--home", str(home), "--holdout", "0.2", "--epochs", str(args.epochs)],
            check=True,
            capture_output=True,
        )
        start = time.perf_counter()
        run = subprocess.run(
            [*cli, "evaluate", "--home", str(home), "--json", "--k", "10", "--bootstrap", "200"],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    report = json.loads(run.stdout)
    result = {
        "users_evaluated": report["users_evaluated"],
        "catalogue_size": report["catalogue_size"],
        "events": n_events,
        "workspace_built_seconds": round(built, 1),
        "evaluate_command_seconds": round(seconds, 1),
        "per_strategy_seconds": report["strategy_seconds"],
        "recall@10": {r["strategy"]: round(r["recall"], 4) for r in report["metrics"] if r["k"] == 10},
        "chosen": {
            name: {k: v for k, v in params.items() if k not in ("grid", "seed")}
            for name, params in report["strategy_params"].items()
        },
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:28s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
