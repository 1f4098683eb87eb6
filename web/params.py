"""Query and form parameters shared by the pages and the API, each refused with a clear 400."""

from __future__ import annotations

import re

from flask import abort, request

from recsys.recommend import STRATEGIES

MAX_K = 100
#: Largest batch of events (POST /api/events with a JSON array), in events and in bytes.
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1024 * 1024


def k(default: int) -> int:
    raw = request.args.get("k", str(default))
    if not re.fullmatch(r"[0-9]{1,4}", raw):  # digits only: int() also reads "+5", " 5", "٣"
        abort(400, description=f"k must be an integer, got {str(raw)[:40]!r}")
    value = int(raw)
    if not 1 <= value <= MAX_K:
        abort(400, description=f"k must be between 1 and {MAX_K}, got {value}")
    return value


def strategy(raw: str | None = None, available: list[str] | tuple[str, ...] = STRATEGIES) -> str:
    """The strategy asked for (query string, or ``raw``), if it is one this workspace can serve."""
    value = raw if raw is not None else request.args.get("strategy", "auto")
    if value not in available:
        abort(400, description=f"strategy {value[:40]!r} is not available; use one of {', '.join(available)}")
    return value
