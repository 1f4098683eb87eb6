"""The JSON API under /api/: recommendations, events, similar items, visual search.

Every route declares the token scope it needs (``web.identity.requires``); its answers are JSON,
errors included, and documented in ``web.openapi`` (served at /api/openapi.json).
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify

from recsys import queries
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
    body = guards.json_object()
    missing = [f for f in ("user", "item") if not isinstance(body.get(f), str) or not body.get(f)]
    if missing:
        abort(400, description=f"missing or non-string field(s): {', '.join(missing)}")
    for name, kind in EVENT_FIELDS.items():
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            abort(400, description=f"field {name!r} has the wrong type")
    report = rec().record(
        body["user"],
        body["item"],
        body.get("event", "view"),
        body.get("at"),
        body.get("weight"),
        body.get("event_key"),
        body.get("request_id"),
    )
    status = 201 if report.stored else 200
    return jsonify(stored=report.stored, duplicate=bool(report.duplicates)), status


@bp.get("/items/<path:key>/similar")
@requires("read")
def similar(key: str):
    hits = rec().similar(key, params.k(10))
    return jsonify(item=key, similar=[h.as_dict() for h in hits])


@bp.post("/search")
@requires("read")
def search():
    return jsonify(similar=[h.as_dict() for h in similar_to_upload(params.k(10))])
