"""Query and form parameters shared by the pages and the API, each refused with a clear 400."""

from __future__ import annotations

from flask import abort, request

from recsys.recommend import STRATEGIES

MAX_K = 100


def k(default: int) -> int:
    raw = request.args.get("k", default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        abort(400, description=f"k must be an integer, got {str(raw)[:40]!r}")
    if not 1 <= value <= MAX_K:
        abort(400, description=f"k must be between 1 and {MAX_K}, got {value}")
    return value


def strategy(raw: str | None = None) -> str:
    value = raw if raw is not None else request.args.get("strategy", "average")
    if value not in STRATEGIES:
        abort(400, description=f"unknown strategy {value[:40]!r}; use one of {', '.join(STRATEGIES)}")
    return value
