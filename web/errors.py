"""One way to answer an error: JSON under /api/, a page elsewhere; never a traceback, never NaN.

A leaf of the web package: the other rooms answer their errors through it, it imports none of them.
"""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from recsys.errors import Conflict, NotAnImage, NotFound, RecsysError, TooLarge

#: recsys's own errors, by the status they answer with (the first match wins; default 400).
STATUS_OF = ((NotFound, 404), (NotAnImage, 415), (TooLarge, 413), (Conflict, 409))


class StrictJSON(DefaultJSONProvider):
    """JSON that ``JSON.parse`` accepts: NaN or Infinity anywhere is a bug, not a value to send."""

    def dumps(self, obj, **kwargs) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, message: str, headers: dict | None = None):
    name = HTTP_STATUS_CODES.get(status, "Error")
    if wants_json():
        response = jsonify(error=name, message=message, status=status)
    else:
        response = current_page(status, message)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def current_page(status: int, message: str):
    from flask import make_response

    try:
        return make_response(render_template("error.html", code=status, message=message))
    except Exception:  # no URLs can be built (e.g. a Host name this server does not answer)
        response = make_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Error')}: {message}\n")
        response.mimetype = "text/plain"
        return response


def http_headers(exc: HTTPException) -> dict[str, str]:
    """The headers an HTTP error carries (Allow, Retry-After...), without its own content type."""
    return {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}


def init_app(app: Flask) -> None:
    app.json = StrictJSON(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or "", http_headers(exc))

    @app.errorhandler(RecsysError)
    def recsys_error(exc: RecsysError):
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
        return error_response(status, str(exc))

    @app.errorhandler(Exception)
    def crash(exc: Exception):  # logged once with its path; the visitor sees no internals
        # the path without its query: a token put in a URL must not end up in the log
        app.logger.error("500 on %s %s", request.method, repr(request.path)[1:-1], exc_info=exc)
        return error_response(500, "unexpected error")
