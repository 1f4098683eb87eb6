"""The "more like your history" page and its JSON API: a thin shell over ``Recommender``.

    app = create_app({"RECSYS_SETTINGS": Settings(home="recsys-home")})

Pages: home (pick a user or start fresh), a user's history and recommendations, an item with
similar items, visual search by upload. Clicking a card records a view through
``Recommender.record`` (the code path of ``recsys record``) and shows the updated grid. Images are
served from the workspace's image store by item id only.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

from flask import Flask, abort, g, jsonify, redirect, render_template, request, send_file, session, url_for
from sqlalchemy import desc, func, select
from werkzeug.exceptions import HTTPException

from recsys import atomic, store
from recsys.errors import NotAnImage, NotFound, RecsysError
from recsys.recommend import STRATEGIES, Recommender
from recsys.settings import Settings
from recsys.workspace import Workspace

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"}
MAX_K = 100


def _secret_key(settings: Settings) -> str:
    """Signed-cookie key: RECSYS_SECRET_KEY, else one kept in the workspace across restarts."""
    import os

    if os.environ.get("RECSYS_SECRET_KEY"):
        return os.environ["RECSYS_SECRET_KEY"]
    path = Path(settings.home) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temporary(path)
        tmp.write_text(secrets.token_hex(32))
        try:  # link, not rename: when two workers start at once, the first key wins for both
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The Flask application. ``config["RECSYS_SETTINGS"]`` picks the workspace (default: env)."""
    config = dict(config or {})
    settings = config.pop("RECSYS_SETTINGS", None) or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.config.update(config)
    workspace = Workspace(settings)
    recommender = Recommender(workspace, log=None)
    lock = threading.Lock()

    def rec() -> Recommender:
        with lock:  # the first request loads vectors and index; the others wait, not repeat it
            recommender.space()
        return recommender

    app.extensions["recsys"] = {"workspace": workspace, "recommender": recommender}

    # -- helpers --------------------------------------------------------------------------------

    def wants_json() -> bool:
        return request.path.startswith("/api/")

    def parse_k(default: int = 12) -> int:
        raw = request.args.get("k", default)
        try:
            k = int(raw)
        except (TypeError, ValueError):
            abort(400, description=f"k must be an integer, got {raw!r}")
        if not 1 <= k <= MAX_K:
            abort(400, description=f"k must be between 1 and {MAX_K}, got {k}")
        return k

    def parse_strategy() -> str:
        strategy = request.args.get("strategy", "average")
        if strategy not in STRATEGIES:
            abort(400, description=f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        return strategy

    def item_ids_for(keys: list[str]) -> dict[str, int]:
        with workspace.session() as s:
            return store.item_ids(s, keys)

    def read_upload() -> bytes:
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            abort(400, description="send the picture as a multipart field named 'image'")
        if upload.mimetype not in IMAGE_TYPES:
            abort(415, description=f"{upload.mimetype or 'unknown type'} is not an image type we accept")
        return upload.read()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if wants_json():
            return jsonify(error=exc.name, message=exc.description, status=exc.code), exc.code
        return render_template("error.html", code=exc.code, message=exc.description), exc.code

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound):
        if wants_json():
            return jsonify(error="Not Found", message=str(exc), status=404), 404
        return render_template("error.html", code=404, message=str(exc)), 404

    @app.errorhandler(RecsysError)
    def bad_input(exc: RecsysError):
        status = 415 if isinstance(exc, NotAnImage) else 400
        if wants_json():
            return jsonify(error="Bad Request", message=str(exc), status=status), status
        return render_template("error.html", code=status, message=str(exc)), status

    @app.errorhandler(Exception)
    def crash(exc: Exception):  # never an HTML traceback
        app.logger.exception("unhandled error")
        if wants_json():
            return jsonify(error="Internal Server Error", message="unexpected error", status=500), 500
        return render_template("error.html", code=500, message="unexpected error"), 500

    @app.before_request
    def current_user() -> None:
        g.user = session.get("user")

    # -- pages ----------------------------------------------------------------------------------

    @app.get("/")
    def home():
        with workspace.session() as s:
            users = s.execute(
                select(store.User.key, func.count(store.Interaction.id).label("n"))
                .join(store.Interaction, store.Interaction.user_id == store.User.id, isouter=True)
                .group_by(store.User.key)
                .order_by(desc("n"))
                .limit(30)
            ).all()
        popular = rec().popular(12)
        return render_template("home.html", users=users, popular=popular)

    @app.post("/start")
    def start_fresh():
        user = f"visitor-{secrets.token_hex(4)}"
        with workspace.session() as s, s.begin():
            store.insert_ignoring_duplicates(s, store.User, [{"key": user, "created_at": store.utcnow()}])
        session["user"] = user
        return redirect(url_for("user_page", user=user))

    @app.get("/users/<user>")
    def user_page(user: str):
        r = rec()
        if not r.user_exists(user):
            raise NotFound(f"unknown user {user!r}")
        session["user"] = user
        strategy = parse_strategy()
        result = r.recommend(user, parse_k(12), strategy=strategy)
        history = r.history(user, limit=30)
        ids = item_ids_for([h.key for h in history] + [i.because for i in result.items if i.because])
        return render_template(
            "user.html",
            user=user,
            result=result,
            history=history,
            ids=ids,
            strategies=STRATEGIES,
            strategy=strategy,
        )

    @app.post("/users/<user>/view")
    def view_item(user: str):
        item = request.form.get("item", "")
        rec().record(user, item, "view")
        return redirect(url_for("user_page", user=user, strategy=request.form.get("strategy", "average")))

    @app.get("/items/<path:key>")
    def item_page(key: str):
        r = rec()
        with workspace.session() as s:
            item = s.scalar(select(store.Item).where(store.Item.key == key))
        if item is None:
            raise NotFound(f"unknown item {key!r}")
        return render_template("item.html", item=item, similar=r.similar(key, parse_k(12)))

    @app.route("/search", methods=["GET", "POST"])
    def search_page():
        hits = None
        if request.method == "POST":
            hits = rec().similar_to_image(read_upload(), parse_k(12))
        return render_template("search.html", hits=hits)

    @app.get("/images/<int:item_id>")
    def image(item_id: int):
        with workspace.session() as s:
            rel = s.scalar(select(store.Item.image_path).where(store.Item.id == item_id))
        if rel is None:
            abort(404, description=f"no item {item_id}")
        path = workspace.image_file(rel)
        if not path.is_file():
            abort(404, description=f"image of item {item_id} is missing")
        response = send_file(path, mimetype="image/jpeg", max_age=3600)
        return response

    # -- JSON API -------------------------------------------------------------------------------

    @app.get("/api/health")
    def health():
        model = recommender.model
        with workspace.session() as s:
            items = s.scalar(select(func.count()).select_from(store.Item))
            embedded = s.scalar(
                select(func.count()).select_from(store.Embedding).where(store.Embedding.model == model)
            )
        return jsonify(status="ok", items=items, embedded=embedded, model=model)

    @app.get("/api/users/<user>/recommendations")
    def api_recommendations(user: str):
        result = rec().recommend(user, parse_k(10), strategy=parse_strategy(), require_user=True)
        return jsonify(result.as_dict())

    @app.post("/api/events")
    def api_events():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, description="send a JSON object: {user, item, event}")
        missing = [f for f in ("user", "item") if not isinstance(body.get(f), str) or not body.get(f)]
        if missing:
            abort(400, description=f"missing or non-string field(s): {', '.join(missing)}")
        event = body.get("event", "view")
        if not isinstance(event, str):
            abort(400, description="event must be a string")
        weight = body.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)):
            abort(400, description="weight must be a number")
        key = body.get("event_key")
        if key is not None and not isinstance(key, str):
            abort(400, description="event_key must be a string")
        at = body.get("at")
        if at is not None and not isinstance(at, str | int | float):
            abort(400, description="at must be an ISO-8601 string or Unix seconds")
        report = rec().record(body["user"], body["item"], event, at, weight, key)
        status = 201 if report.stored else 200
        return jsonify(stored=report.stored, duplicate=bool(report.duplicates)), status

    @app.get("/api/items/<path:key>/similar")
    def api_similar(key: str):
        hits = rec().similar(key, parse_k(10))
        return jsonify(item=key, similar=[h.as_dict() for h in hits])

    @app.post("/api/search")
    def api_search():
        hits = rec().similar_to_image(read_upload(), parse_k(10))
        return jsonify(similar=[h.as_dict() for h in hits])

    return app
