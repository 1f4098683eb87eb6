"""What the static site's quantised vectors cost: file size and top-10 agreement with the server.

For each storage (float16, int8, PCA-reduced int8), runs `recsys export-static`, opens the page
from disk in headless Chromium, asks the browser's kNN for the 10 items most similar to each of
``--queries`` random items, and compares with the server's exact kNN over the float32 vectors
(``Recommender.similar`` without an index). Prints the vectors file size, the mean overlap of the
two top-10 lists, the page's time to decode the vectors, and a browser query's median time.

    python bench/static_export.py --home WORKSPACE [--queries 100] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import recsys  # noqa: E402,F401
from recsys.recommend import Recommender  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.workspace import Workspace  # noqa: E402

STORAGES = [("float16", None), ("int8", None), ("int8", 256), ("int8", 128)]


def browser_knn(site: Path, item_ids: list[int], k: int) -> tuple[dict[int, list[int]], float, float]:
    """(the browser's top-k ids per item, seconds until the page was ready, median ms per query)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page()
        started = time.perf_counter()
        page.goto((site / "index.html").as_uri())
        page.wait_for_function("window.RecsysStatic !== undefined")
        ready = time.perf_counter() - started
        found = page.evaluate(
            """([ids, k]) => ids.map((id) => {
                const t0 = performance.now();
                const hits = window.RecsysStatic.similar(id, k).map((h) => h.id);
                return [id, hits, performance.now() - t0];
            })""",
            [item_ids, k],
        )
        browser.close()
    return {int(i): hits for i, hits, _ in found}, ready, statistics.median(ms for *_, ms in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="An embedded workspace (e.g. flowers5).")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with Workspace(Settings(home=Path(args.home))) as ws:
        rec = Recommender(ws, use_index=False, log=None, impressions=None)
        space = rec.space()
        rng = np.random.default_rng(args.seed)
        chosen = sorted(int(i) for i in rng.choice(space.ids, size=args.queries, replace=False))
        exact = {}
        for item_id in chosen:
            row = space.rows([item_id])[0]
            scores = space.matrix @ space.matrix[row]
            scores[row] = -np.inf
            exact[item_id] = [int(space.ids[r]) for r in np.argsort(-scores)[: args.k]]
    runs = []
    for quantise, pca in STORAGES:
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            cmd = [sys.executable, "-m", "recsys.cli", "export-static", str(site), "--home", args.home]
            cmd += ["--quantise", quantise, "--json", "--quiet"] + (["--pca", str(pca)] if pca else [])
            report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            found, ready, query_ms = browser_knn(site, chosen, args.k)
        overlap = [len(set(found[i]) & set(exact[i])) for i in chosen]
        runs.append(
            {
                "storage": quantise + (f", PCA {pca}" if pca else ""),
                "dim": report["dim"],
                "vectors_file_mb": round(report["vectors_file_bytes"] / 1e6, 2),
                "site_mb": round(report["total_bytes"] / 1e6, 1),
                "top10_overlap_mean": round(float(np.mean(overlap)), 3),
                "top10_overlap_min": int(min(overlap)),
                "page_ready_s": round(ready, 2),
                "browser_query_ms_p50": round(query_ms, 1),
            }
        )
        if not args.json:
            print("  ".join(f"{k} {v}" for k, v in runs[-1].items()))
    if args.json:
        print(json.dumps({"items": len(space.ids), "queries": args.queries, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
