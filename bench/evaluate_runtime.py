"""How long does `recsys evaluate` take on 600 users x 3,000 items x 4 strategies?

Copies the recommend bench's base workspace (real flowers5 photos with Lite0 vectors), keeps the
first 3,000 labelled items, simulates 600 users, trains a two-tower model on the evaluation's
split (so all four strategies run: average, two-tower, popular, random), then times the
`recsys evaluate` command end to end (process start included). Training is not timed.

    python bench/evaluate_runtime.py [--users 600] [--items 3000] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, select  # noqa: E402

import recsys  # noqa: E402,F401
from recsys import store  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.simulate import SimulationConfig, simulate  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402

BASE = Path.home() / ".cache" / "recsys" / "bench-base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--events-per-user", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (BASE / "recsys.db").exists():
        sys.exit("error: run bench/recommend_latency.py once first (it builds the base workspace)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(BASE, home, ignore=shutil.ignore_patterns("indexes"))
        with Workspace(Settings(home=home)) as ws:
            with ws.session() as s:
                keep = s.scalars(
                    select(store.Item.id)
                    .where(store.Item.label.is_not(None))
                    .order_by(store.Item.id)
                    .limit(args.items)
                ).all()
            with ws.session() as s, s.begin():
                s.execute(delete(store.Embedding).where(store.Embedding.item_id.not_in(keep)))
                s.execute(delete(store.Item).where(store.Item.id.not_in(keep)))
            simulate(
                ws,
                SimulationConfig(users=args.users, events_per_user=args.events_per_user, seed=7),
                progress=False,
            )
        cli = [sys.executable, "-m", "recsys.cli"]
        subprocess.run(
            [*cli, "train", "--home", str(home), "--holdout", "0.2", "--epochs", "3"],
            check=True,
            capture_output=True,
        )
        start = time.perf_counter()
        run = subprocess.run(
            [*cli, "evaluate", "--home", str(home), "--json"], check=True, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
    report = json.loads(run.stdout)
    result = {
        "users_evaluated": report["users_evaluated"],
        "catalogue_size": report["catalogue_size"],
        "strategies": sorted(report["strategy_seconds"]),
        "evaluate_command_seconds": round(seconds, 1),
        "evaluation_seconds_in_process": report["seconds"],
        "per_strategy_seconds": report["strategy_seconds"],
        "recall@10": {r["strategy"]: round(r["recall"], 4) for r in report["metrics"] if r["k"] == 10},
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:32s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
