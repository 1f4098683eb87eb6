"""Does "more like your history" follow a history? Many simulated users on a labelled workspace.

For each label, ``--users`` users view 5 random items of that label: how many of their top 10
share it? Then each of them views 5 items of a second label: how many of those appear at once?
Runs the product's own path (``Recommender.recommend_for_history`` with the ``average`` strategy),
with seen items excluded, on the workspace given by ``--home`` (e.g. flowers5 ingested and embedded).

    python bench/history_quality.py --home /path/to/workspace [--users 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import recsys  # noqa: E402,F401
from recsys.events import Event  # noqa: E402
from recsys.recommend import Recommender  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diversify", type=float, default=None, help="MMR lambda (off by default).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    ws = Workspace(Settings.from_env(home=args.home))
    rec = Recommender(ws, log=None, impressions=None)
    space = rec.space()
    labels = sorted({lab for lab in space.labels if lab is not None})
    by_label = {lab: space.ids[space.labels == lab] for lab in labels}
    label_of = {int(i): lab for i, lab in zip(space.ids, space.labels, strict=True)}
    now = datetime.now(UTC)

    def top10(views: dict[int, float]) -> list[str]:
        history = [Event(i, "view", w, now) for i, w in views.items()]
        options = {} if args.diversify is None else {"diversify": True, "mmr_lambda": args.diversify}
        result = rec.recommend_for_history(history, 10, strategy="average", describe=False, **options)
        return [label_of[r.item_id] for r in result.items]

    report: dict = {}
    for first in labels:
        same = []
        then: dict[str, list[int]] = {other: [] for other in labels if other != first}
        for _ in range(args.users):
            views = {int(i): 1.0 for i in rng.choice(by_label[first], args.views, replace=False)}
            same.append(top10(views).count(first))
            for other in then:
                more = {int(i): 1.0 for i in rng.choice(by_label[other], args.views, replace=False)}
                then[other].append(top10({**views, **more}).count(other))
        report[first] = {
            "users": args.users,
            f"mean_same_label_in_top10_after_{args.views}_views": round(float(np.mean(same)), 2),
            "share_with_at_least_9_of_10": round(float(np.mean(np.array(same) >= 9)), 3),
            f"after_{args.views}_views_of_another_label": {
                other: {
                    "share_showing_it_at_once": round(float(np.mean(np.array(c) > 0)), 3),
                    "mean_count_in_top10": round(float(np.mean(c)), 2),
                }
                for other, c in then.items()
            },
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for label, row in report.items():
            print(label, json.dumps(row))


if __name__ == "__main__":
    main()
