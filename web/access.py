"""One access-log line per request: method, path, status, milliseconds (logger ``recsys.access``).

Only the query parameters the app reads are logged with their values."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

log = logging.getLogger("recsys.access")


#: Query parameters logged as they are; any other one's value is logged as "..." (a token a
#: client put in a URL must not end up in the log).
LOGGED_PARAMETERS = {"k", "strategy"}


def _query() -> str:
    if not request.args:
        return ""
    shown = [
        f"{name}={value if name in LOGGED_PARAMETERS else '...'}"
        for name, value in request.args.items(multi=True)
    ]
    return "?" + "&".join(shown)


def init_app(app: Flask) -> None:
    @app.before_request
    def started() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def finished(response):
        if log.isEnabledFor(logging.INFO):
            ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
            path = request.path + _query()
            # repr escapes newlines and other control characters: a path cannot forge log lines
            log.info("%s %s %d %.1fms", request.method, repr(path)[1:-1], response.status_code, ms)
        return response
