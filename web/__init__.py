"""The "more like your history" page and its JSON API: a thin shell over ``Recommender``.

    app = create_app({"RECSYS_SETTINGS": Settings(home="recsys-home"), "RECSYS_DEMO": False})

The rooms: ``pages`` and ``api`` (blueprints), ``identity`` (visitors and tokens), ``guards``
(CSRF, limits, headers, input bounds), ``errors`` and ``access`` (answers and logs). This factory
only wires them together.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from recsys import atomic
from recsys.impressions import ImpressionLog
from recsys.recommend import Recommender
from recsys.settings import Settings
from recsys.workspace import Workspace
from web import access, admin, api, errors, guards, identity, pages
from web.services import Services
from web.uploads import MAX_UPLOAD_BYTES

__all__ = ["MAX_UPLOAD_BYTES", "create_app"]

#: The most a form's text field may hold (a CSRF token and an item key need far less).
FORM_FIELD_BYTES = 128 * 1024


def _secret_key(settings: Settings) -> str:
    """Signed-cookie key: RECSYS_SECRET_KEY, else one kept (mode 0600) in the workspace."""
    if os.environ.get("RECSYS_SECRET_KEY"):
        return os.environ["RECSYS_SECRET_KEY"]
    path = Path(settings.home) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = atomic.temporary(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:  # link, not rename: when two workers start at once, the first key wins for both
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The Flask application.

    ``config["RECSYS_SETTINGS"]`` picks the workspace (default: from the environment);
    ``config["RECSYS_DEMO"]`` turns on demo mode (other people's pages; loopback only).
    """
    config = dict(config or {})
    settings = config.pop("RECSYS_SETTINGS", None) or Settings.from_env()
    demo = bool(config.pop("RECSYS_DEMO", False))
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        # Text fields stay small. Werkzeug also counts against this limit the bytes its multipart
        # decoder holds (a 64 KiB read and the tail that may start a boundary), file parts
        # included: at 64 KiB, pictures over one read were refused (413). So: a read and then some.
        MAX_FORM_MEMORY_SIZE=FORM_FIELD_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(days=365),
    )
    app.config.update(config)
    workspace = Workspace(settings)
    impressions = ImpressionLog(workspace, background=True)  # serving never waits for the log
    recommender = Recommender(workspace, log=None, impressions=impressions)
    app.extensions["recsys"] = Services(settings, workspace, recommender, demo)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    access.init_app(app)  # first: its clock starts before any guard can refuse the request
    errors.init_app(app)
    identity.init_app(app)
    guards.init_app(app, settings, demo=demo)
    guards.csrf.exempt(api.bp)  # bearer tokens, never cookies: a browser cannot forge them
    return app
