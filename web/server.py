"""Running the app: which server, how many processes, preloaded and warmed up; chosen, and said.

Defaults come from measurements on a 2-core machine (``bench/web_load.py``; README "Serving"):
one gunicorn worker process per core, each with a few threads, so Python's GIL never holds every
request; the app (vectors, index, caches) is loaded once in the parent before the workers fork,
so they share those pages of memory, and warmed up, so the first visitor is not the slow one.
Windows has no fork (and no gunicorn): there, one waitress process.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import threading
import time
from dataclasses import dataclass

from recsys.errors import RecsysError
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


#: One log format for recsys, waitress and gunicorn alike, on stderr: access lines, start, errors.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        name: {"level": "INFO", "handlers": [], "propagate": True}
        for name in ("recsys", "waitress", "web", "gunicorn.error")
    },
}


def address(host: str) -> str:
    """A host as it stands before ":port" in a bind address or URL: an IPv6 address in brackets."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def check_port(host: str, port: int) -> None:
    """A one-line error, before anything is loaded, when ``host:port`` cannot be listened on."""
    import socket

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise RecsysError(
                f"cannot listen on {host}:{port} ({exc.strerror}): another server may be using it; "
                "pick another with --port"
            ) from None


def restart_without_tensorflow(settings: Settings, host: str, port: int, chosen: Plan, demo: bool) -> None:
    """Serve from a fresh interpreter: TensorFlow's runtime does not survive a fork, and a worker
    forked after it ran hangs in its first upload (the demo embeds before it serves)."""
    argv = [sys.executable, "-m", "recsys.cli", "serve", "--host", host, "--port", str(port)]
    if chosen != plan(None, None):
        argv += ["--workers", str(chosen.workers), "--threads", str(chosen.threads)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv + (["--demo"] if demo else []), {**os.environ, **settings.environment()})


def run(settings: Settings, host: str, port: int, chosen: Plan, demo: bool = False, echo=print) -> None:
    """Load the app, say what was chosen, serve until interrupted."""
    from web.uploads import MAX_UPLOAD_BYTES

    check_port(host, port)
    if chosen.server == "gunicorn" and "tensorflow" in sys.modules:
        restart_without_tensorflow(settings, host, port, chosen, demo)
    logging.config.dictConfig(LOGGING)
    started = time.perf_counter()
    # gunicorn forks workers from this process: trained models are loaded in each worker instead
    app = make_app(settings, demo, models=chosen.server != "gunicorn")
    services = app.extensions["recsys"]
    space = services.recommender.space()
    index = space.index.meta.factory if space.index is not None else "exact (in memory)"
    mode = "; DEMO mode: everyone's pages are public" if demo else ""
    url = f"http://{address(host)}:{port}/"
    echo(
        f"serving recsys on {url} with {chosen.server}, {chosen.workers} process(es) x "
        f"{chosen.threads} threads ({chosen.why}); index {index} over {len(space.ids):,} items "
        f"({services.settings.index_factory}); loaded and warmed in {time.perf_counter() - started:.1f} s, "
        f"shared by the workers{mode}  (Ctrl+C stops)"
    )
    if len(space.ids) == 0:
        echo(
            f"note: workspace {settings.home} has no embedded items yet: the page will be empty until "
            "`recsys ingest PATH` and `recsys embed`, or point --home (RECSYS_HOME) at another workspace"
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
        "bind": f"{address(host)}:{port}",
        "workers": chosen.workers,
        "threads": chosen.threads,
        "worker_class": "gthread",
        "accesslog": None,
        "keepalive": 5,
        "logconfig_dict": LOGGING,
        "control_socket_disable": True,  # no socket left in the user's home folder
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
