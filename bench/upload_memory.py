"""Concurrent uploads against `recsys serve`: the server's peak memory growth and the latency.

Starts `recsys serve` (one waitress process, the default) on loopback over a workspace of the
bundled photos, then sends ``--concurrent`` visual searches at once, each a PNG of ``--side`` x
``--side`` pixels (a few kB of PNG that decode to tens of MB), and samples the server's RSS every
10 ms from /proc. Prints the peak RSS growth over the idle server, the p50/max latency, and the
status codes. ``--repo`` runs another checkout's server (e.g. an older commit, for before/after).

    python bench/upload_memory.py [--concurrent 16] [--side 7900] [--repo PATH] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def png(side: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG")
    return out.getvalue()


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def recsys(repo: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args], cwd=repo, env=env, capture_output=True, text=True, **kw
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--side", type=int, default=7900)
    parser.add_argument("--rounds", type=int, default=3, help="Bursts sent one after the other.")
    parser.add_argument("--repo", type=Path, default=ROOT, help="Checkout whose server is measured.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    repo = args.repo.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        recsys(repo, "demo", "--no-serve", "--quiet", "--home", str(home), check=True)
        made = recsys(repo, "token", "create", "bench", "--home", str(home))
        auth = (
            {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
            if made.returncode == 0
            else {}
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
        env["RECSYS_LIMIT_UPLOADS"] = "100000 per minute"  # measure memory, not the rate limit
        server = subprocess.Popen(
            [sys.executable, "-m", "recsys.cli", "serve", "--home", str(home), "--port", str(port)],
            cwd=repo,
            env=env,
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
            body, kind = multipart(png(args.side))
            # one small search first, so the model is loaded before the idle RSS is read
            warm, warm_kind = multipart(png(64))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/api/search?k=3", warm, {"Content-Type": warm_kind, **auth})
            conn.getresponse().read()
            time.sleep(0.5)
            idle = rss_mb(server.pid)
            peak = idle
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, rss_mb(server.pid))
                    time.sleep(0.01)

            results: list[tuple[int, float, str]] = []
            lock = threading.Lock()

            def upload() -> None:
                start = time.perf_counter()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                c.request("POST", "/api/search?k=3", body, {"Content-Type": kind, **auth})
                r = c.getresponse()
                text = r.read()
                retry = r.getheader("Retry-After") or ""
                with lock:
                    results.append((r.status, (time.perf_counter() - start) * 1000, retry))
                _ = text

            sampler = threading.Thread(target=sample)
            sampler.start()
            for _ in range(args.rounds):
                threads = [threading.Thread(target=upload) for _ in range(args.concurrent)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            stop.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    times = [t for _, t, _ in results]
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    out = {
        "repo": str(repo),
        "concurrent": args.concurrent,
        "rounds": args.rounds,
        "side": args.side,
        "png_bytes": len(body),
        "idle_rss_mb": round(idle, 1),
        "peak_rss_growth_mb": round(peak - idle, 1),
        "p50_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "statuses": statuses,
        "retry_after_on_503": all(r for s, _, r in results if s == 503),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:20s} {value}")


if __name__ == "__main__":
    main()
