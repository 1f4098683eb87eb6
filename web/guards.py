"""Request guards: CSRF, same-origin posts, rate limits, security headers, input bounds, uploads.

CSRF tokens come from Flask-WTF and rate limits from Flask-Limiter; this module only says where
they apply. Every limit is a setting (``RECSYS_LIMIT_*``), counted per token for the API and per
client address for the page; counters live in ``RECSYS_LIMIT_STORAGE`` ("local" by default: a file
every process of this machine shares, ``web.counters``; a redis:// URL shares them between servers).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

from flask import Flask, abort, g, request
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix

from recsys.settings import Settings
from web import counters
from web.errors import error_response, http_headers
from web.identity import visitor
from web.params import MAX_BATCH_BYTES, MAX_BATCH_EVENTS

#: Largest JSON body the API reads, and the deepest nesting it parses.
MAX_JSON_BYTES = 64 * 1024
#: Largest id a route accepts (SQL integers are 64-bit).
MAX_ID = 2**63 - 1
#: Seconds an upload waits for a decode slot before the answer is 503.
DECODE_WAIT_SECONDS = 1.0

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

csrf = CSRFProtect()


# -- who a limit counts -------------------------------------------------------------------------


def client_address() -> str:
    return f"addr:{request.remote_addr or 'unknown'}"


def token_or_address() -> str:
    token = g.get("token")
    return f"token:{token.name}" if token is not None else client_address()


#: endpoint -> (setting holding the limit, whom it counts, exempt when[, what a request costs])
LIMITS = {
    "api.events": [("limit_api_writes", token_or_address, None, lambda: events_in_body())],
    "api.recommendations": [("limit_api_reads", token_or_address, None)],
    "api.similar": [("limit_api_reads", token_or_address, None)],
    "api.search": [("limit_uploads", token_or_address, None)],
    "pages.search": [("limit_uploads", client_address, lambda: request.method != "POST")],
    "pages.view": [
        ("limit_page_writes", client_address, None),
        ("limit_new_visitors", client_address, lambda: visitor() is not None),  # the first click
    ],
    "pages.start": [("limit_new_visitors", client_address, None)],
    "pages.home": [("limit_page_reads", client_address, None)],
    "pages.you": [("limit_page_reads", client_address, None)],
    "pages.user_page": [("limit_page_reads", client_address, None)],
    "pages.item_page": [("limit_page_reads", client_address, None)],
    "admin.login": [("limit_admin_logins", client_address, lambda: request.method != "POST")],
}


def apply_limits(app: Flask, settings: Settings) -> Limiter:
    """A limiter of this app's own (its counters are not shared with other apps in the process).

    A limit named by the same setting is one budget wherever it applies (a new visitor made by
    "Start fresh" or by a first click counts once against the same hourly allowance).
    """
    limiter = Limiter(
        client_address,
        app=app,
        storage_uri=counters.storage_uri(settings.limit_storage, settings.home),
        strategy="sliding-window-counter",  # O(1) per hit; a moving window scans its entries
        key_prefix="recsys",
        # A counter that cannot be updated must not fail the request it counts (the in-memory
        # storage of `limits` can race starting its expiry timer under threads: logged, let through).
        swallow_errors=True,
    )
    for endpoint, limits in LIMITS.items():
        view = app.view_functions[endpoint]
        for setting, key, exempt, *cost in limits:
            limit = getattr(settings, setting)
            cost = cost[0] if cost else 1
            view = limiter.shared_limit(limit, setting, key_func=key, exempt_when=exempt, cost=cost)(view)
        app.view_functions[endpoint] = view
    return limiter


def retry_after() -> int:
    """Seconds until the limit this request broke lets another request through."""
    import time

    from flask import current_app

    breached = current_app.extensions["recsys_limiter"].current_limit
    if breached is None:
        return 1
    return max(1, int(breached.reset_at - time.time()))


# -- cross-site posts ----------------------------------------------------------------------------


def same_origin_posts():
    """Refuse a state-changing page request sent from another site (even with a stolen token).

    Browsers send Origin on cross-site posts, and Sec-Fetch-Site everywhere they can; a request
    with neither (curl, old browsers) still has to carry the CSRF token.
    """
    if request.method in ("GET", "HEAD", "OPTIONS") or request.path.startswith("/api/"):
        return None
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        abort(403, description="cross-site request refused")
    origin = request.headers.get("Origin")
    if origin is not None:
        here = urlsplit(request.host_url)
        there = urlsplit(origin)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            abort(403, description=f"request from another origin ({origin[:100]}) refused")
    return None


# -- input bounds ----------------------------------------------------------------------------


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _no_repeats(pairs: list) -> dict:
    """A JSON object whose every name appears once (with two "user"s, which is meant?)."""
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"the name {next(n for n in names if names.count(n) > 1)[:40]!r} appears twice")
    return dict(pairs)


def json_value(max_bytes: int = MAX_JSON_BYTES):
    """The request body as JSON, bounded in size and depth; NaN/Infinity and repeated names are
    refused. Read once per request, its refusal too (the write limit counts a batch's events
    before the view runs, and the body can be read only once)."""
    if "json_body" in g:
        return g.json_body
    if "json_refused" in g:
        raise g.json_refused
    try:
        g.json_body = _parse_json(max_bytes)
    except HTTPException as exc:
        g.json_refused = exc
        raise
    return g.json_body


def _parse_json(max_bytes: int):
    if request.mimetype != "application/json":  # exactly what the document says, not any "+json"
        abort(415, description="send Content-Type: application/json with a JSON object or array")
    too_big = f"JSON bodies are limited to {max_bytes // 1024} KB"
    if (request.content_length or 0) > max_bytes:
        abort(413, description=too_big)
    raw = request.get_data(cache=False)
    g.json_bytes = len(raw)
    if len(raw) > max_bytes:
        abort(413, description=too_big)
    try:
        return json.loads(raw, parse_constant=_no_constants, object_pairs_hook=_no_repeats)
    except RecursionError:
        abort(400, description="JSON nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:
        abort(400, description=f"body is not valid JSON ({str(exc).splitlines()[0][:120]})")


def events_in_body() -> int:
    """What a write costs against its rate limit: the events a batch holds, at most a full batch's
    (a single event, or a body that will be refused, costs 1). Never raises: the view says what is
    wrong with a body."""
    try:
        body = json_value(MAX_BATCH_BYTES)
    except HTTPException:
        return 1
    return min(max(1, len(body)), MAX_BATCH_EVENTS) if isinstance(body, list) else 1


def item_id(value: int) -> int:
    """An id from a URL, or 404 when no SQL integer could hold it."""
    if not 0 < value <= MAX_ID:
        abort(404, description=f"no item {value}")
    return value


# -- uploads ---------------------------------------------------------------------------------


class DecodeSlots:
    """At most ``n`` uploads decoded at once in this process; the rest wait briefly, then 503."""

    def __init__(self, n: int) -> None:
        self._slots = threading.BoundedSemaphore(n)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=DECODE_WAIT_SECONDS):
            raise ServiceUnavailable(
                description="too many pictures are being decoded right now; try again in a second",
                retry_after=1,
            )
        try:
            yield
        finally:
            self._slots.release()


# -- wiring --------------------------------------------------------------------------------


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]


def host_name(host: str) -> str:
    """The name in a Host header, without its port, lower case: "[::1]:8000" -> "[::1]"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def answered_hosts(hosts: list[str]):
    """A ``before_request`` refusing (400) a Host header this server does not answer to.

    Not Flask's TRUSTED_HOSTS: Werkzeug cuts each trusted name at its first ":", so an IPv6 address
    (demo mode on ::1) could never be trusted and every request was refused."""
    allowed = {host_name(f"[{h.strip('[]')}]" if ":" in h else h) for h in hosts}

    def check():
        if host_name(request.host) not in allowed:
            abort(400, description="this server does not answer to that host name")

    return check


def init_app(app: Flask, settings: Settings, *, demo: bool = False) -> None:
    """Everything here, applied to ``app`` (after its blueprints are registered; ``create_app``
    exempts the bearer-token API from CSRF)."""
    # Which Host headers are answered: demo mode is loopback-only, so a rebound DNS name cannot
    # read everyone's pages from a visitor's browser; elsewhere RECSYS_ALLOWED_HOSTS (any if unset).
    hosts = LOOPBACK_HOSTS if demo else [h.strip() for h in settings.allowed_hosts.split(",") if h.strip()]
    if hosts:
        app.before_request(answered_hosts(hosts))
    app.url_map.merge_slashes = False  # no redirect that builds a URL from the Host header
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid as long as the session
    csrf.init_app(app)
    app.before_request(same_origin_posts)
    app.extensions["recsys_decodes"] = DecodeSlots(settings.upload_decodes)
    app.extensions["recsys_limiter"] = apply_limits(app, settings)

    @app.errorhandler(429)
    def too_many(exc):  # the limiter's refusal says when to come back
        return error_response(
            429, exc.description or "", {**http_headers(exc), "Retry-After": str(retry_after())}
        )

    @app.after_request
    def security_headers(response):
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if not request.path.startswith(("/static/", "/images/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def decode_slot():
    from flask import current_app

    return current_app.extensions["recsys_decodes"].hold()
