"""One access-log line per request: method, path, status, milliseconds (logger ``recsys.access``)."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

log = logging.getLogger("recsys.access")


def init_app(app: Flask) -> None:
    @app.before_request
    def started() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def finished(response):
        if log.isEnabledFor(logging.INFO):
            ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
            path = request.full_path.rstrip("?")
            # repr escapes newlines and other control characters: a path cannot forge log lines
            log.info("%s %s %d %.1fms", request.method, repr(path)[1:-1], response.status_code, ms)
        return response
