"""Open-loop capacity of `recsys serve`: the highest rate it answers with p99 <= 50 ms, and the floor's.

Builds a workspace of ``--items`` items (bench/web_load.py's catalogue), ``--users-per-length``
users with each of 20-, 150- and 1,000-event histories (views, half of items near three favourite
items of theirs, half of any item, spread over the last 90 days, stored directly), 200 users who
receive the posted events (so the histories of those asked about keep their lengths), and
``--tokens`` write tokens, enough that the per-token rate limits never bind (a 429 is an error);
runs `recsys index`. Then serves it twice, one server after the other, both with the gunicorn
settings `recsys serve` picks: the bare Flask app of bench/web_floor.py (the two routes with fixed
answers: what Flask, gunicorn and the loopback cost), and `recsys serve` with no flags.

The load is an open loop, from a generator process of its own (asyncio, keep-alive HTTP/1.1
connections, at most ``--connections`` open): Poisson arrivals at a set rate, half asking for
recommendations (k=10) of a user drawn evenly from the three history lengths, half posting a view
with a unique event_key, round-robin over the tokens. Latency runs from each request's scheduled
time, so a late generator or a wait for a free connection counts (no coordinated omission); a
request unanswered 5 s after its time is an error. The generator's own CPU time is measured and
printed (per request, and as a share of one core): it shares the machine's cores with the server.
Beside each step, the cores the server used and those other processes used (from /proc): another
process busy on the machine takes cores from the server, and its capacity then reads low.

Rate search, per server: a step runs one rate for ``--step-seconds`` (the first second is warm-up,
left out of the latencies) and passes when the p99 of its requests (both kinds) is <= 50 ms and
every scheduled request was answered with 200 or 201. From 100/s the rate doubles until a step
fails, then bisects between the last pass and the first fail until they are within 5%. Capacity
is the highest passing rate. Then recsys runs ``--half-seconds`` at half its capacity: p50/p99 per
kind. Last, every event acknowledged with 201 must be in the database; lost ones are counted.

Traffic stays on loopback, everything stops by itself, the temporary workspace is removed.

    python bench/web_capacity.py [--items 10000] [--users-per-length 30] [--tokens 32]
                                 [--step-seconds 8] [--half-seconds 20] [--connections 256] [--json]
"""

from __future__ import annotations

# Only the standard library at the top: the generator process runs this file too, and starts fast.
import argparse
import asyncio
import collections
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: A step passes when the p99 of its requests is at most this many milliseconds (and none failed).
P99_GOAL_MS = 50.0
#: Seconds after its scheduled time a request is given up as an error.
TIMEOUT_S = 5.0
#: The first seconds of each step, left out of its latencies (connections open, caches warm).
WARM_UP_S = 1.0
#: History lengths of the users asked about.
LENGTHS = (20, 150, 1000)
#: Users who receive the posted events, each with a 20-event history of their own.
WRITERS = 200
#: A connection idle this long is not reused: gunicorn closes keep-alive connections after 5 s.
IDLE_S = 4.0


# ---------------------------------------------------------------------------------------------
# The load generator (its own process: `web_capacity.py --generate SPEC PORT RATE SECONDS SEED TAG`)


class Pool:
    """Keep-alive connections, at most ``cap`` open; the most recently used is reused first, so
    no more connections are open than the load needs, and requests wait for one in arrival order."""

    def __init__(self, port: int, cap: int) -> None:
        self.port, self.cap = port, cap
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.open = 0
        self.most_open = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A live idle connection, a new one while fewer than ``cap`` are open, else wait for one."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.idle:
            reader, writer, used = self.idle.pop()
            if now - used < IDLE_S and not reader.at_eof():
                return reader, writer
            self.discard(writer)
        if self.open >= self.cap:
            waiter = loop.create_future()
            self.waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:  # timed out; a connection handed over meanwhile goes back
                if waiter.done() and not waiter.cancelled():
                    self._return(waiter.result())
                raise
            if handed is not None:
                return handed
            return await self._connect(reserved=True)
        return await self._connect(reserved=False)

    async def _connect(self, reserved: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection; ``reserved``: its slot was counted when it was handed over."""
        if not reserved:
            self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            return await asyncio.open_connection("127.0.0.1", self.port)
        except BaseException:
            self.open -= 1
            self._hand(None)
            raise

    def put(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection answered on and kept alive: to the longest waiting request, else idle."""
        self._return((reader, writer))

    def _return(self, conn: tuple | None) -> None:
        """Give back a connection, or (None) a reserved slot, that a request no longer needs."""
        if conn is None:  # a slot to open a connection in, not a connection
            self.open -= 1
            self._hand(None)
        elif not self._hand(conn):
            self.idle.append((*conn, asyncio.get_running_loop().time()))

    def _hand(self, conn: tuple | None) -> bool:
        """Give ``conn`` (None: the right to open one) to the longest waiting request, if any."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self.open += 1  # reserved for the waiter, before it opens its connection
                waiter.set_result(conn)
                return True
        return False

    def discard(self, writer: asyncio.StreamWriter) -> None:
        """Close a broken, stale or server-closed connection; a waiting request may open one instead."""
        writer.close()
        self.open -= 1
        self._hand(None)

    def close(self) -> None:
        """Close the idle connections at the end of a step (all are idle by then)."""
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[int, bool]:
    """Send one request, read its answer: (status, whether the server closes the connection)."""
    writer.write(payload)  # a few hundred bytes: far below the transport's buffer limit, no drain
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, close, chunked = None, False, False
    for line in head[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return status, close


def schedule(spec: dict, port: int, rate: float, seconds: float, seed: int, tag: str) -> tuple:
    """The step's requests, built before it starts: Poisson arrival times (s), kinds (a history
    length's index for a recommendation, "e" for an event), the bytes to send, event keys."""
    rng = random.Random(seed)
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    auth = [f"Authorization: Bearer {t}\r\n".encode() for t in spec["tokens"]]
    due, kinds, payloads, keys = [], [], [], []
    t = rng.expovariate(rate)
    while t < seconds:
        n = len(due)
        due.append(t)
        if rng.random() < 0.5:
            group = rng.randrange(len(spec["users"]))  # evenly over the history lengths
            user = rng.choice(spec["users"][group])
            kinds.append(str(group))
            keys.append(None)
            line = f"GET /api/users/{user}/recommendations?k=10 HTTP/1.1\r\n".encode()
            payloads.append(line + host + auth[n % len(auth)] + b"\r\n")
        else:
            key = f"{tag}-{n}"
            body = json.dumps(
                {
                    "user": rng.choice(spec["writers"]),
                    "item": rng.choice(spec["items"]),
                    "event": "view",
                    "event_key": key,
                }
            ).encode()
            kinds.append("e")
            keys.append(key)
            payloads.append(
                b"POST /api/events HTTP/1.1\r\n"
                + host
                + auth[n % len(auth)]
                + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        t += rng.expovariate(rate)
    return due, kinds, payloads, keys


async def generate(spec: dict, port: int, rate: float, seconds: float, seed: int, tag: str) -> dict:
    """Send the step's requests at their scheduled times; each one's latency from that time."""
    due, kinds, payloads, keys = schedule(spec, port, rate, seconds, seed, tag)
    loop = asyncio.get_running_loop()
    pool = Pool(port, spec["connections"])
    n = len(due)
    status = [-1] * n  # -1: not answered in time; 0: connection failed; else the HTTP status
    latency = [0.0] * n
    lag = [0.0] * n  # from the scheduled time to the request written: the generator's own lateness
    outstanding = n
    finished = loop.create_future()

    async def one(i: int, at: float) -> None:
        nonlocal outstanding
        try:
            async with asyncio.timeout_at(at + TIMEOUT_S):
                reader, writer = await pool.get()
                lag[i] = loop.time() - at
                try:
                    status[i], close = await exchange(reader, writer, payloads[i])
                except BaseException:
                    pool.discard(writer)
                    raise
                if close:
                    pool.discard(writer)
                else:
                    pool.put(reader, writer)
        except TimeoutError:
            status[i] = -1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status[i] = 0
        latency[i] = loop.time() - at
        outstanding -= 1
        if outstanding == 0 and not finished.done():
            finished.set_result(None)

    gc.disable()  # no collector pauses mid-step: the step's garbage is small and freed at exit
    cpu0, start_wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    start = loop.time() + 0.05
    i = 0
    while i < n:
        now = loop.time()
        if start + due[i] > now:
            await asyncio.sleep(start + due[i] - now)
            now = loop.time()
        while i < n and start + due[i] <= now:  # everything due by now: a late wake-up sends a batch
            loop.create_task(one(i, start + due[i]))
            i += 1
    if n:
        await finished
    wall = time.perf_counter() - start_wall
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    pool.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "due": due,
        "kinds": "".join(kinds),
        "status": status,
        "latency_ms": [round(x * 1000, 3) for x in latency],
        "lag_ms": [round(x * 1000, 3) for x in lag],
        "acked": [k for k, s in zip(keys, status, strict=True) if k is not None and s == 201],
        "cpu_s": cpu,
        "wall_s": wall,
        "most_connections": pool.most_open,
    }


def generator_main(argv: list[str]) -> None:
    """Entry of the generator process: one step, its raw results as one JSON line on stdout."""
    spec_path, port, rate, seconds, seed, tag = argv
    spec = json.loads(Path(spec_path).read_text())
    result = asyncio.run(generate(spec, int(port), float(rate), float(seconds), int(seed), tag))
    sys.stdout.write(json.dumps(result) + "\n")


# ---------------------------------------------------------------------------------------------
# The orchestrator


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``th percentile in ms, rounded; None when there are no values (a step without any)."""
    import numpy as np

    return round(float(np.percentile(values, q)), 2) if values else None


def cpu_times(server_pid: int) -> tuple[float, float] | None:
    """CPU seconds (the whole machine's, the server's with its workers) so far, from /proc (Linux):
    what the machine spent beyond the server and the generator is someone else's work, which takes
    cores from the server and lowers its capacity."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        pids, server = [server_pid], 0
        while pids:
            pid = pids.pop()
            stat = Path(f"/proc/{pid}/stat").read_text()
            server += sum(int(x) for x in stat.rsplit(")", 1)[1].split()[11:13])  # utime, stime
            for task in Path(f"/proc/{pid}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
    except (OSError, ValueError, IndexError):
        return None
    return busy / tick, server / tick


def run_step(
    spec_path: Path, port: int, rate: float, seconds: float, seed: int, tag: str, server_pid: int
) -> dict:
    """One rate for ``seconds``, from a generator process; its figures and whether it passed."""
    before, children, wall = cpu_times(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--generate",
            str(spec_path),
            str(port),
            str(rate),
            str(seconds),
            str(seed),
            tag,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + TIMEOUT_S + 120,
    )
    if done.returncode != 0:
        sys.exit(f"error: the load generator failed:\n{done.stderr[-3000:]}")
    after, wall = cpu_times(server_pid), time.time() - wall
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime  # start-up too
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    n = len(raw["due"])
    kept = [i for i in range(n) if raw["due"][i] >= WARM_UP_S]
    statuses = collections.Counter(raw["status"])
    errors = sum(c for s, c in statuses.items() if s not in (200, 201))
    p99 = percentile([raw["latency_ms"][i] for i in kept], 99)
    out = {
        "rate": rate,
        "requests": n,
        "p50_ms": percentile([raw["latency_ms"][i] for i in kept], 50),
        "p99_ms": p99,
        "errors": errors,
        "unanswered": statuses.get(-1, 0) + statuses.get(0, 0),
        "passed": n > 0 and errors == 0 and p99 is not None and p99 <= P99_GOAL_MS,
        "generator_lag_p99_ms": percentile([raw["lag_ms"][i] for i in kept], 99),
        "generator_cpu_s": round(raw["cpu_s"], 3),
        "generator_cpu_us_per_request": round(raw["cpu_s"] / max(n, 1) * 1e6, 1),
        "generator_core_share": round(raw["cpu_s"] / raw["wall_s"], 3),
        "most_connections": raw["most_connections"],
    }
    if before is not None and after is not None:  # cores in use on average over the step
        out["server_cores"] = round((after[1] - before[1]) / wall, 2)
        out["others_cores"] = round(
            max(0.0, after[0] - before[0] - after[1] + before[1] - generator) / wall, 2
        )
    failed = {str(s): c for s, c in sorted(statuses.items()) if s not in (200, 201)}
    if failed:  # -1: no answer within 5 s of its time, 0: connection failed
        out["error_statuses"] = failed
    groups = {"recommend": "012", "event": "e"}
    groups |= {f"recommend_{length}_events": str(n) for n, length in enumerate(LENGTHS)}
    for name, kinds in groups.items():
        times = [raw["latency_ms"][i] for i in kept if raw["kinds"][i] in kinds]
        out[name] = {"requests": len(times), "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}
    out["acked"] = raw["acked"]
    return out


def show(name: str, step: dict) -> None:
    """One step's line on stderr, as the search goes."""
    verdict = "pass" if step["passed"] else "FAIL"
    print(
        f"  {name:6s} {step['rate']:>7.0f}/s  p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms  "
        f"errors {step['errors']}{' ' + str(step.get('error_statuses')) if step['errors'] else ''}  "
        f"generator {step['generator_cpu_us_per_request']} us/req, {step['generator_core_share']:.0%} "
        f"of a core, lag p99 {step['generator_lag_p99_ms']} ms, {step['most_connections']} conns; "
        f"server {step.get('server_cores')} cores, others {step.get('others_cores')}  {verdict}"
        + (
            "  (other processes took CPU: this step reads low)"
            if (step.get("others_cores") or 0) > 0.2
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )


def search(
    name: str, spec_path: Path, port: int, server_pid: int, args: argparse.Namespace, tag: str
) -> tuple[float, list]:
    """Double from ``--start-rate`` until a step fails, then bisect to within 5%: the capacity."""
    steps: list[dict] = []
    best, fail = 0.0, None
    rate = float(args.start_rate)
    while len(steps) < args.max_steps:
        seed = len(steps) + 1
        step = run_step(spec_path, port, rate, args.step_seconds, seed, f"{tag}-s{len(steps)}", server_pid)
        steps.append(step)
        show(name, step)
        if step["passed"]:
            best = max(best, rate)
        else:
            fail = rate if fail is None else min(fail, rate)
        time.sleep(0.5 if step["passed"] else 3.0)  # an overloaded server drains its backlog first
        if fail is None:
            rate *= 2
        elif best == 0:
            rate /= 2
            if rate < 1:
                break
        elif fail - best <= 0.05 * best:
            break
        else:
            rate = round((best + fail) / 2)
    return best, steps


def build(home: Path, n_items: int, per_length: int, n_tokens: int) -> dict:
    """The catalogue, the users and their histories, the tokens: what the generator needs."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import web_load

    from recsys import store, tokens
    from recsys.interactions import NewEvent, record
    from recsys.settings import Settings
    from recsys.workspace import Workspace

    web_load.build_catalogue(home, n_items)
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    with Workspace(Settings(home=home)) as ws:
        with ws.session() as s:
            ids, matrix = store.load_embeddings(s, "efficientnet-lite0")
            key_of = dict(s.execute(store.select(store.Item.id, store.Item.key)).all())
        keys = [key_of[int(i)] for i in ids]
        groups = [[f"cap-h{length}-{n}" for n in range(per_length)] for length in LENGTHS]
        writers = [f"cap-w-{n}" for n in range(WRITERS)]
        histories = [(u, length) for length, users in zip(LENGTHS, groups, strict=True) for u in users]
        histories += [(u, 20) for u in writers]
        # each user's favourites: the 50 items nearest each of three random items
        anchors = rng.integers(0, len(ids), (len(histories), 3))
        scores = matrix @ matrix[anchors.ravel()].T
        near = np.argpartition(-scores, 50, axis=0)[:50].T.reshape(len(histories), -1)
        del scores
        events = []
        for (user, length), favourites in zip(histories, near, strict=True):
            picks = np.where(
                rng.random(length) < 0.5, rng.choice(favourites, length), rng.integers(0, len(ids), length)
            )
            ages = np.sort(rng.uniform(3600, 90 * 86400, length))[::-1]  # seconds ago, oldest first
            events += [
                NewEvent(user, keys[p], "view", ts=now - timedelta(seconds=float(a)))
                for p, a in zip(picks, ages, strict=True)
            ]
        for start in range(0, len(events), 20_000):
            record(ws, events[start : start + 20_000])
        secrets = [tokens.create(ws, f"capacity-{n}", "write") for n in range(n_tokens)]
    return {"users": groups, "writers": writers, "items": keys, "tokens": secrets}


def start_server(cmd: list[str], port: int, probe: str, token: str, label: str, log) -> subprocess.Popen:
    """Start a server and wait until ``probe`` answers 200 (its first answer after loading)."""
    import http.client

    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # this checkout's code
    deadline = time.perf_counter() + 600
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", probe, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return server
        except OSError:
            pass
        if time.perf_counter() > deadline or server.poll() is not None:
            stop(server)
            log.seek(0)
            sys.exit(f"error: the {label} server never answered:\n{log.read()[-3000:]}")
        time.sleep(0.2)


def stop(server: subprocess.Popen) -> None:
    """Terminate a server and wait for it (gunicorn stops its workers first), killing it if stuck."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(args: argparse.Namespace) -> dict:
    """Build, index, serve the bare app then recsys, search both, run recsys at half capacity."""
    import web_load

    from recsys import store
    from recsys.settings import Settings
    from recsys.workspace import Workspace

    started = time.perf_counter()
    tag = f"cap{time.time_ns()}"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        print(
            f"building {args.items:,} items and {3 * args.users_per_length + WRITERS} users ...",
            file=sys.stderr,
            flush=True,
        )
        spec = build(home, args.items, args.users_per_length, args.tokens)
        spec["connections"] = args.connections
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        subprocess.run(
            [sys.executable, "-m", "recsys.cli", "index", "--home", str(home)],
            check=True,
            capture_output=True,
        )
        probe_user = spec["users"][-1][0]
        probe = f"/api/users/{probe_user}/recommendations?k=10"
        token = spec["tokens"][0]
        print(f"built and indexed in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

        # the floor: the bare Flask app, same gunicorn settings
        port = web_load.free_port()
        with tempfile.TemporaryFile("w+") as log:
            server = start_server(
                [
                    sys.executable,
                    str(ROOT / "bench" / "web_floor.py"),
                    "--serve",
                    "bare",
                    str(home),
                    str(port),
                ],
                port,
                probe,
                token,
                "bare",
                log,
            )
            try:
                floor, floor_steps = search("bare", spec_path, port, server.pid, args, f"{tag}-bare")
            finally:
                stop(server)

        # recsys serve, no flags
        port = web_load.free_port()
        with tempfile.TemporaryFile("w+") as log:
            server = start_server(
                [sys.executable, "-m", "recsys.cli", "serve", "--home", str(home), "--port", str(port)],
                port,
                "/api/health",
                token,
                "recsys",
                log,
            )
            try:
                capacity, steps = search("recsys", spec_path, port, server.pid, args, f"{tag}-rec")
                half_rate = round(capacity / 2) or 1
                half = run_step(
                    spec_path, port, half_rate, args.half_seconds, 1000, f"{tag}-half", server.pid
                )
                show("half", half)
            finally:
                stop(server)
                log.seek(0)
                lines = log.read().splitlines()
        said = next((line for line in lines if line.startswith("serving recsys")), "")
        server_errors = [line for line in lines if " 500 on " in line or "Traceback" in line]

        acked = {k for step in [*steps, half] for k in step["acked"]}
        with Workspace(Settings(home=home)) as ws, ws.session() as s:
            stored = set(
                s.scalars(
                    store.select(store.Interaction.event_key).where(
                        store.Interaction.event_key.like(f"{tag}-%")
                    )
                )
            )
    for step in [*floor_steps, *steps, half]:
        del step["acked"]
    everything = [*floor_steps, *steps, half]
    cpu = sum(st["generator_cpu_s"] for st in everything)
    requests = sum(st["requests"] for st in everything)
    return {
        "items": args.items,
        "floor_per_s": floor,
        "recsys_per_s": capacity,
        "ratio": round(capacity / floor, 3) if floor else None,
        # False: no step failed within --max-steps, so the capacity is only a lower bound
        "floor_bounded": any(not st["passed"] and st["rate"] > floor for st in floor_steps),
        "recsys_bounded": any(not st["passed"] and st["rate"] > capacity for st in steps),
        "half_load": {
            "rate": half_rate,
            "recommend": {k: half["recommend"][k] for k in ("p50_ms", "p99_ms")},
            "event": {k: half["event"][k] for k in ("p50_ms", "p99_ms")},
        },
        "errors": half["errors"],
        "lost": len(acked - stored),
        "events_acknowledged": len(acked),
        "errors_elsewhere": {
            "floor_steps": sum(st["errors"] for st in floor_steps),
            "recsys_steps": sum(st["errors"] for st in steps),
            "passing_steps": sum(st["errors"] for st in [*floor_steps, *steps] if st["passed"]),
            "statuses": dict(
                sum(
                    (collections.Counter(st.get("error_statuses", {})) for st in everything),
                    collections.Counter(),
                )
            ),
            "server_log_errors": len(server_errors),
        },
        "generator": {
            "cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
            "core_share_at_floor_capacity": next(
                (st["generator_core_share"] for st in floor_steps if st["rate"] == floor), None
            ),
            "core_share_at_recsys_capacity": next(
                (st["generator_core_share"] for st in steps if st["rate"] == capacity), None
            ),
            "connections_cap": args.connections,
        },
        "server_said": said,
        "half": half,
        "floor_steps": floor_steps,
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        # cores other processes kept busy during the steps (most in one step): above ~0.2, the
        # server had less than the whole machine and its capacity reads low
        "others_cores_max": max((st.get("others_cores") or 0 for st in everything), default=None),
    }


def main() -> None:
    """Parse the flags; measure (or, with the hidden --generate, be the load generator)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users-per-length", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=32, help="Write tokens, used round-robin.")
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--half-seconds", type=float, default=20.0)
    parser.add_argument("--start-rate", type=float, default=100.0)
    parser.add_argument("--max-steps", type=int, default=12, help="Steps per server's search.")
    parser.add_argument("--connections", type=int, default=256, help="Most connections open at once.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--generate", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generator_main(args.generate)
        return
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result)


def report(result: dict) -> None:
    """The steps as a table (generator: its share of one core; server, others: cores busy), then
    the capacities, the half-load latencies and what went wrong."""
    print(
        f"{'server':7s} {'rate/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s} {'generator':>9s} "
        f"{'server':>6s} {'others':>6s}  result"
    )
    for name, steps in (("bare", result["floor_steps"]), ("recsys", result["steps"])):
        for st in steps:
            print(
                f"{name:7s} {st['rate']:>7.0f} {st['p50_ms']:>8} {st['p99_ms']:>8} {st['errors']:>6d} "
                f"{st['generator_core_share']:>9.0%} {st.get('server_cores', '-'):>6} "
                f"{st.get('others_cores', '-'):>6}  {'pass' if st['passed'] else 'fail'}"
            )
    h, g = result["half_load"], result["generator"]
    rec, ev = h["recommend"], h["event"]
    print(f"\nitems            {result['items']:,}")
    at_least = {False: " at least (no step failed: raise --max-steps)", True: ""}
    print(f"floor            {result['floor_per_s']:.0f}/s{at_least[result['floor_bounded']]}")
    print(
        f"recsys           {result['recsys_per_s']:.0f}/s{at_least[result['recsys_bounded']]} "
        f"(ratio {result['ratio']})"
    )
    print(f"half load        {h['rate']}/s: recommend p50/p99 {rec['p50_ms']} / {rec['p99_ms']} ms")
    print(f"                 event p50/p99 {ev['p50_ms']} / {ev['p99_ms']} ms")
    for length in LENGTHS:
        by = result["half"][f"recommend_{length}_events"]
        print(f"                 recommend, {length:>4}-event histories: {by['p50_ms']} / {by['p99_ms']} ms")
    print(
        f"errors, lost     {result['errors']}, {result['lost']} "
        f"of {result['events_acknowledged']} events acknowledged"
    )
    print(f"errors elsewhere {result['errors_elsewhere']}")
    print(f"others' cores    {result['others_cores_max']} at most, during a step (other processes' work)")
    print(
        f"generator        {g['cpu_us_per_request']} us CPU per request; "
        f"{g['core_share_at_floor_capacity']} of a core at the floor's capacity"
    )


if __name__ == "__main__":
    main()
