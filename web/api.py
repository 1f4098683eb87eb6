"""The JSON API under /api/: recommendations, events, similar items, visual search.

Every route declares the token scope it needs (``web.identity.requires``); its answers are JSON,
errors included, and documented in ``web.openapi`` (served at /api/openapi.json).
"""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify

from recsys import queries
from recsys.interactions import CONFLICT, DUPLICATE, INVALID, STORED, UNKNOWN_ITEM, NewEvent
from web import guards, params
from web.identity import authenticate, requires
from web.openapi import document
from web.services import rec, services
from web.uploads import similar_to_upload

bp = Blueprint("api", __name__, url_prefix="/api")
bp.before_request(authenticate)

EVENT_FIELDS = {
    "user": str,
    "item": str,
    "event": str,
    "weight": (int, float),
    "at": (str, int, float),
    "event_key": str,
    "request_id": str,
}


@bp.get("/health")
@requires(None)
def health():
    s = services()
    return jsonify(status="ok", **queries.health(s.workspace, s.recommender.model))


@bp.get("/openapi.json")
@requires(None)
def openapi():
    return jsonify(document())


@bp.get("/users/<path:user>/recommendations")
@requires("read")
def recommendations(user: str):
    result = rec().recommend(user, params.k(10), strategy=params.strategy(), require_user=True)
    return jsonify(result.as_dict())


@bp.post("/events")
@requires("write")
def events():
    body = guards.json_value(params.MAX_BATCH_BYTES)
    if isinstance(body, list):
        return batch(body)
    if not isinstance(body, dict):
        abort(400, description="send a JSON object (one event) or an array of them")
    if g.json_bytes > guards.MAX_JSON_BYTES:
        abort(413, description=f"one event is limited to {guards.MAX_JSON_BYTES // 1024} KB")
    event = new_event(body)
    if isinstance(event, str):
        abort(400, description=event)
    report = rec().record(
        event.user, event.item, event.event, event.ts, event.weight, event.event_key, event.request_id
    )
    status = 201 if report.stored else 200
    return jsonify(stored=report.stored, duplicate=bool(report.duplicates)), status


def batch(body: list):
    """Up to ``MAX_BATCH_EVENTS`` events, each stored, a duplicate, or refused on its own: the
    answer gives each one's result, in order."""
    if not 0 < len(body) <= params.MAX_BATCH_EVENTS:
        abort(400, description=f"send 1 to {params.MAX_BATCH_EVENTS} events in an array, not {len(body)}")
    parsed = [new_event(e) for e in body]
    good = [e for e in parsed if not isinstance(e, str)]
    report = rec().record_many(good)
    outcomes, reasons = iter(report.outcomes), report.reasons()
    results, done = [], 0
    for event in parsed:
        if isinstance(event, str):
            results.append({"result": "error", "status": 400, "message": event})
            continue
        outcome = next(outcomes)
        if outcome in (STORED, DUPLICATE):
            results.append({"result": outcome})
        else:
            results.append({"result": "error", "status": ERROR_STATUS[outcome], "message": reasons[done]})
        done += 1
    errors = len(body) - report.stored - report.duplicates
    return jsonify(stored=report.stored, duplicates=report.duplicates, errors=errors, results=results)


#: The HTTP status a single event would have been refused with, by ``RecordReport`` outcome.
ERROR_STATUS = {INVALID: 400, UNKNOWN_ITEM: 404, CONFLICT: 409}


def new_event(body) -> NewEvent | str:
    """One event of a request body, or what is wrong with its shape (its values are checked when
    it is recorded)."""
    if not isinstance(body, dict):
        return "an event is a JSON object"
    missing = [f for f in ("user", "item") if not isinstance(body.get(f), str) or not body.get(f)]
    if missing:
        return f"missing or non-string field(s): {', '.join(missing)}"
    for name, kind in EVENT_FIELDS.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            return f"field {name!r} has the wrong type"
    return NewEvent(
        body["user"],
        body["item"],
        body.get("event", "view"),
        body.get("at"),
        body.get("weight"),
        body.get("event_key"),
        body.get("request_id"),
    )


@bp.get("/items/<path:key>/similar")
@requires("read")
def similar(key: str):
    hits = rec().similar(key, params.k(10))
    return jsonify(item=key, similar=[h.as_dict() for h in hits])


@bp.post("/search")
@requires("read")
def search():
    return jsonify(similar=[h.as_dict() for h in similar_to_upload(params.k(10))])
