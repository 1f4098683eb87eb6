"""The admin dashboard at /admin: the workspace's state, its numbers as pictures, live experiments.

Who may look: a request with an admin-scoped bearer token, a browser signed in with one (the
login form keeps only the token's name in the signed session, and each visit re-checks that the
token is still live), or anyone in demo mode (loopback only). Read- and write-scoped tokens get
403; everyone else 401 and the login form.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, abort, g, jsonify, redirect, render_template, request, session, url_for

from recsys import overview, plots, tokens
from web.identity import bearer_refusal, bearer_token, verified_token
from web.services import services

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: Seconds a signed-in admin's token is trusted before it is looked up again (revocation delay).
SESSION_RECHECK_SECONDS = 5.0


def _session_admin() -> str | None:
    name = session.get("admin")
    if not isinstance(name, str):
        return None
    cache = services().token_cache
    hit = cache.get(("admin-session", name))
    if hit is not None and hit[1] > time.monotonic():
        return name
    token = tokens.live(services().workspace, name)
    if token is None or not token.allows("admin"):
        session.pop("admin", None)
        return None
    cache[("admin-session", name)] = (token, time.monotonic() + SESSION_RECHECK_SECONDS)
    return name


@bp.before_request
def only_admins():
    if request.endpoint == "admin.login":
        return None
    if bearer_token() is not None:
        refusal = bearer_refusal("admin")
        if refusal is not None:
            return _refuse(*refusal[:2])
        g.admin = g.token.name
        return None
    if services().demo:
        g.admin = "demo mode"
        return None
    name = _session_admin()
    if name is None:
        return _refuse(401, "sign in with an admin token (recsys token create NAME --scope admin)")
    g.admin = name
    return None


def _refuse(status: int, message: str):
    if request.path.endswith((".json", ".png")):
        return jsonify(
            error="forbidden" if status == 403 else "unauthorized", message=message, status=status
        ), status
    return render_template("admin_login.html", message=message), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("admin_login.html", message=None)
    token = verified_token(request.form.get("token", "").strip())
    if token is None or not token.allows("admin"):
        return render_template("admin_login.html", message="that is not a live admin token"), 403
    session["admin"] = token.name
    return redirect(url_for("admin.dashboard"))


@bp.post("/logout")
def logout():
    session.pop("admin", None)
    return redirect(url_for("pages.home"))


@bp.get("")
def dashboard():
    state = overview.overview(services().workspace, services().recommender.model)
    return render_template("admin.html", state=state, admin=g.admin, plot_version=int(time.time()))


@bp.get("/overview.json")
def overview_json():
    return jsonify(overview.overview(services().workspace, services().recommender.model))


@bp.get("/plots/<name>.png")
def plot(name: str):
    ws = services().workspace
    if name == "events":
        png = plots.events_per_day(overview.events_per_day(ws))
    elif name == "recall":
        latest = overview.evaluation(ws)
        title = (
            f"recall@K, evaluation {latest['id']} ({latest['split']} split, {latest['users']} users)"
            if latest
            else "recall@K"
        )
        png = plots.recall_at_k(latest["metrics"] if latest else [], title)
    elif name == "experiments":
        png = plots.experiment_ctr(overview.experiment_reports(ws))
    else:
        abort(404, description=f"no plot called {name!r}")
    return Response(png, mimetype="image/png")
