"""Running the app: which server, how many processes, preloaded and warmed up; chosen, and said.

Defaults come from measurements on a 2-core machine (``bench/web_load.py``; README "Serving"):
one gunicorn worker process per core, each with a few threads, so Python's GIL never holds every
request; the app (vectors, index, caches) is loaded once in the parent before the workers fork,
so they share those pages of memory, and warmed up, so the first visitor is not the slow one.
Windows has no fork (and no gunicorn): there, one waitress process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from recsys.settings import Settings

#: Threads per worker process: enough to overlap database waits, few enough not to fight over the GIL.
THREADS = 4
#: Seconds a Python thread may hold the GIL while others wait (see ``make_app``).
SWITCH_INTERVAL = 0.0005


@dataclass(frozen=True)
class Plan:
    """How ``recsys serve`` will run, and why (printed in one line at start)."""

    server: str  # "gunicorn" | "waitress" | "flask-debug"
    workers: int
    threads: int
    why: str


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan(workers: int | None, threads: int | None, debug: bool = False) -> Plan:
    """The server for these flags (None: choose)."""
    threads = threads or THREADS
    if debug:
        return Plan("flask-debug", 1, 1, "--debug: Flask's development server")
    if workers is None:
        if sys.platform == "win32":
            return Plan("waitress", 1, threads * 2, "Windows cannot fork worker processes")
        n = cores()
        if n == 1:
            return Plan("waitress", 1, threads * 2, "1 core")
        return Plan("gunicorn", n, threads, f"{n} cores: one worker process per core")
    if workers > 1:
        return Plan("gunicorn", workers, threads, f"--workers {workers}")
    return Plan("waitress", 1, threads, "--workers 1")


def make_app(settings: Settings, demo: bool, models: bool = True):
    """The app, loaded and warmed: vectors, index, popularity and one query already done."""
    import faiss
    from threadpoolctl import threadpool_limits

    from web import create_app

    # Concurrency comes from requests; OpenMP threads inside each search would oversubscribe cores
    # (and spin-wait after each search). OpenMP's thread count belongs to the thread that sets it,
    # so each request thread sets its own (measured: recommendations p50 16.4 -> 12.2 ms).
    faiss.omp_set_num_threads(1)
    # The same for numpy's BLAS: "because you viewed" multiplies a 10 x 1280 matrix by a 1280 x 20 one,
    # and OpenBLAS split it over both cores, then spun waiting for more work (measured in one thread,
    # 10k items: explain 3.2 -> 0.27 ms, a whole recommendation 7.1 -> 4.7 ms). Process-wide, so set
    # once, before the workers fork.
    threadpool_limits(1, user_api="blas")
    openmp = threading.local()

    def one_search_thread() -> None:
        if not getattr(openmp, "set", False):
            faiss.omp_set_num_threads(1)
            openmp.set = True

    # A thread computing a recommendation holds the GIL up to the switch interval (5 ms by default)
    # while a quick event write waits for it; hand it over every 0.5 ms instead.
    sys.setswitchinterval(SWITCH_INTERVAL)
    app = create_app({"RECSYS_SETTINGS": settings, "RECSYS_DEMO": demo})
    app.before_request(one_search_thread)
    app.extensions["recsys"].warm_up(models=models)
    return app


def run(settings: Settings, host: str, port: int, chosen: Plan, demo: bool = False, echo=print) -> None:
    """Load the app, say what was chosen, serve until interrupted."""
    from web.uploads import MAX_UPLOAD_BYTES

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for name in ("recsys", "waitress", "web", "gunicorn.error"):  # access lines, start, errors
        logging.getLogger(name).setLevel(logging.INFO)
    started = time.perf_counter()
    # gunicorn forks workers from this process: trained models are loaded in each worker instead
    app = make_app(settings, demo, models=chosen.server != "gunicorn")
    services = app.extensions["recsys"]
    space = services.recommender.space()
    index = space.index.meta.factory if space.index is not None else "exact (in memory)"
    mode = "; DEMO mode: everyone's pages are public" if demo else ""
    echo(
        f"serving recsys on http://{host}:{port}/ with {chosen.server}, {chosen.workers} process(es) x "
        f"{chosen.threads} threads ({chosen.why}); index {index} over {len(space.ids):,} items "
        f"({services.settings.index_factory}); loaded and warmed in {time.perf_counter() - started:.1f} s, "
        f"shared by the workers{mode}  (Ctrl+C stops)"
    )
    if chosen.server == "flask-debug":  # never Werkzeug's interactive console
        app.run(host=host, port=port, debug=True, use_debugger=False, use_reloader=False)
    elif chosen.server == "gunicorn":
        serve_recsys_with_gunicorn(app, host, port, chosen)
    else:
        import waitress

        waitress.serve(
            app,
            host=host,
            port=port,
            threads=chosen.threads,
            ident="recsys",
            # waitress buffers a whole body before the app sees it: cap it at the largest upload
            max_request_body_size=MAX_UPLOAD_BYTES + 64 * 1024,
        )


def gunicorn_options(host: str, port: int, chosen: Plan) -> dict:
    """gunicorn's settings for this plan (bench/web_floor.py serves its bare app with them too)."""
    return {
        "bind": f"{host}:{port}",
        "workers": chosen.workers,
        "threads": chosen.threads,
        "worker_class": "gthread",
        "accesslog": None,
        "keepalive": 5,
    }


def serve_with_gunicorn(app, options: dict) -> None:
    """Serve ``app``, already loaded here, before the fork: the workers share its memory."""
    from gunicorn.app.base import BaseApplication

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Gunicorn().run()


def serve_recsys_with_gunicorn(app, host: str, port: int, chosen: Plan) -> None:
    """The recsys app on gunicorn, with the hooks its workers need around the fork."""

    def post_fork(server, worker) -> None:
        # The parent's database connections must not be shared: each worker opens its own.
        app.extensions["recsys"].workspace.engine.dispose(close=False)

    def post_worker_init(worker) -> None:
        # Its own connection and a query of its own, before the worker takes its first request.
        app.extensions["recsys"].warm_up()

    def worker_exit(server, worker) -> None:
        # impressions still queued in this worker are committed before it goes
        log = app.extensions["recsys"].recommender.impressions
        if log is not None:
            log.flush()

    hooks = {"post_fork": post_fork, "post_worker_init": post_worker_init, "worker_exit": worker_exit}
    serve_with_gunicorn(app, {**gunicorn_options(host, port, chosen), **hooks})
