"""Who is asking: the page's visitor (a signed session cookie) and the API's bearer token.

A visitor is a random, unguessable user key made when they start fresh or first click; the cookie
is the only way to act as them, and no URL switches it. API calls carry ``Authorization: Bearer
<token>`` (``recsys token create``); each route says the scope it needs, and a route is public only
when it says so.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, abort, current_app, g, request, session

from recsys import tokens
from web.errors import error_response
from web.services import services

F = TypeVar("F", bound=Callable)
VISITOR_PREFIX = "visitor-"


# -- page visitors --------------------------------------------------------------------------------


def visitor() -> str | None:
    """The visitor's user key from the signed cookie, or None before they start."""
    return session.get("visitor")


def new_visitor() -> str:
    """Make a fresh visitor and sign them in (starting fresh drops the previous identity).

    Nothing is stored until they click: the user row comes with their first event.
    """
    key = VISITOR_PREFIX + secrets.token_urlsafe(16)
    session.clear()
    session["visitor"] = key
    session.permanent = True
    return key


def visitor_or_new() -> str:
    return visitor() or new_visitor()


def origin() -> str:
    """The network a page visitor comes from, hashed with the app's key (the address itself is not
    kept): its address, or its /64 for IPv6, whose last 64 bits a device may change at will.
    Popularity counts the visitors of one origin as one person."""
    address = request.remote_addr or "unknown"
    try:
        network = ipaddress.ip_network(f"{address}/{64 if ':' in address else 32}", strict=False)
    except ValueError:
        network = address
    key = current_app.config["SECRET_KEY"].encode()
    return "page:" + hmac.new(key, str(network).encode(), hashlib.sha256).hexdigest()[:32]


def demo_only() -> None:
    """Other people's pages exist only in demo mode; elsewhere they are simply not there."""
    if not services().demo:
        abort(404)


# -- API tokens -----------------------------------------------------------------------------------


def requires(scope: str | None) -> Callable[[F], F]:
    """Declare the token scope a JSON route needs (None: public). Undeclared routes need ``read``."""
    if scope is not None and scope not in tokens.SCOPES:
        raise ValueError(scope)

    def mark(view: F) -> F:
        view.required_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def required_scope(endpoint: str | None) -> str | None:
    view = current_app.view_functions.get(endpoint or "")
    return getattr(view, "required_scope", "read")


Refusal = tuple[int, str, dict[str, str]]  # status, message, headers


def bearer_refusal(scope: str) -> Refusal | None:
    """Check the request's bearer token against ``scope``: None when it may go on (``g.token`` is
    then set), else why not: 401 without a live token, 403 when its scope is too narrow."""
    secret = bearer_token()
    if secret is None:
        return (
            401,
            "this endpoint needs 'Authorization: Bearer <token>' (make one with `recsys token create NAME`)",
            {"WWW-Authenticate": 'Bearer realm="recsys"'},
        )
    token = verified_token(secret)
    if token is None:
        return (
            401,
            "unknown or revoked token",
            {"WWW-Authenticate": 'Bearer realm="recsys", error="invalid_token"'},
        )
    if not token.allows(scope):
        return (
            403,
            f"token {token.name!r} has scope {token.scope!r}; this needs {scope!r}",
            {"WWW-Authenticate": f'Bearer realm="recsys", error="insufficient_scope", scope="{scope}"'},
        )
    g.token = token
    return None


def authenticate():
    """``before_request`` of the API: each route's declared scope, or a JSON refusal."""
    scope = required_scope(request.endpoint)
    if request.endpoint is None or scope is None:
        return None
    refusal = bearer_refusal(scope)
    return None if refusal is None else error_response(*refusal)


#: Seconds a verified token is trusted without asking the database again: a revoked token is
#: refused within this long (one query per request would cost a third of a recommendation).
TOKEN_CACHE_SECONDS = 5.0


def bearer_token() -> str | None:
    """The secret of ``Authorization: Bearer <secret>``, or None when the header has none."""
    kind, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


def verified_token(secret: str) -> tokens.Token | None:
    """The live token for ``secret`` (trusted for a few seconds once looked up), or None."""
    cache = services().token_cache
    now = time.monotonic()
    hit = cache.get(secret)
    if hit is not None and hit[1] > now:
        return hit[0]
    token = tokens.verify(services().workspace, secret)
    if token is not None:
        if len(cache) > 10_000:
            cache.clear()
        cache[secret] = (token, now + TOKEN_CACHE_SECONDS)
    return token


def init_app(app: Flask) -> None:
    @app.context_processor
    def who() -> dict:
        return {"visitor": visitor(), "demo": services().demo}
