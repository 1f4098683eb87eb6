"""The pages: home, your history and recommendations, items, search by photo, item images.

The visitor is whoever the signed cookie says (``web.identity``); every page shows only their own
history. Other people's pages and the People list exist only in demo mode.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, send_file, url_for

from recsys import demo, queries
from recsys.errors import NotFound
from recsys.keys import user_key
from recsys.serving import results
from web import guards, params
from web.identity import demo_only, new_visitor, origin, visitor, visitor_or_new
from web.services import rec, services
from web.uploads import similar_to_upload

bp = Blueprint("pages", __name__)

#: What a click on the page may record.
PAGE_EVENTS = ("view", "like")


def _history_page(user: str | None, *, own: bool):
    """The history strip and the "more like your history" grid of ``user`` (None: nobody yet)."""
    r = rec()
    strategy = params.strategy(available=r.strategies())
    k = params.k(12)
    result = (
        r.recommend(user, k, strategy=strategy)
        if user
        else r.recommend_for_history([], k, strategy=strategy, log_impressions=True)
    )
    history = r.history(user, limit=30) if user else []
    return render_template(
        "user.html",
        user=user,
        own=own,
        result=result,
        history=history,
        strategies=r.strategies(),
        strategy=strategy,
    )


@bp.app_template_global()
def readable_title(title: str | None, label: str | None, item_id: int) -> str:
    return results.readable_title(title, label, item_id)


@bp.get("/")
def home():
    people = queries.people(services().workspace, 30, pinned=(demo.USER,)) if services().demo else None
    return render_template("home.html", people=people, popular=rec().popular(12))


@bp.post("/start")
def start():
    new_visitor()
    return redirect(url_for("pages.you"))


@bp.get("/you")
def you():
    return _history_page(visitor(), own=True)


@bp.post("/view")
def view():
    """A click on a card (a view) or on "I like this": recorded for the signed-in visitor (made now
    if this is their first), then the item's page (``then=item``) or the visitor's own."""
    item = request.form.get("item", "")
    event = request.form.get("event", "view")
    if event not in PAGE_EVENTS:
        abort(400, description=f"event must be one of {', '.join(PAGE_EVENTS)}")
    strategy = params.strategy(request.form.get("strategy", "auto"), available=rec().strategies())
    request_id = request.form.get("request_id") or None  # the list the click came from
    rec().record(visitor_or_new(), item, event, request_id=request_id, origin=origin())
    if request.form.get("then") == "item":  # a picture opened: its page (the key was just checked)
        return redirect(url_for("pages.item_page", key=item.strip()))
    return redirect(url_for("pages.you", strategy=strategy))


@bp.get("/users/<path:user>")
def user_page(user: str):
    demo_only()
    if not queries.user_exists(services().workspace, user_key(user)):
        raise NotFound(f"unknown user {user!r}")
    return _history_page(user, own=user == visitor())


@bp.get("/items/<path:key>")
def item_page(key: str):
    item = queries.item(services().workspace, key)
    if item is None:
        raise NotFound(f"unknown item {key!r}")
    return render_template("item.html", item=item, similar=rec().similar(key, params.k(12)))


@bp.route("/search", methods=["GET", "POST"])
def search():
    hits = similar_to_upload(params.k(12)) if request.method == "POST" else None
    return render_template("search.html", hits=hits)


@bp.get("/images/<int:item_id>")
def image(item_id: int):
    guards.item_id(item_id)
    path = queries.image_path(services().workspace, item_id)
    if path is None:
        abort(404, description=f"no item {item_id}")
    if not path.is_file():
        abort(404, description=f"image of item {item_id} is missing")
    # the download name is the id: the image store's own file names stay internal
    return send_file(path, mimetype="image/jpeg", max_age=3600, download_name=f"{item_id}.jpg")
