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
#: Seconds an admin sign-in lasts, whatever the cookie's own lifetime (a visitor's is a year).
ADMIN_SESSION_SECONDS = 8 * 3600


def _session_admin() -> str | None:
    """The name of the token this browser signed in with, while that sign-in holds: the same token
    (by identity: a new token may take a revoked one's name), live, still admin, not signed out
    since, and signed in less than ``ADMIN_SESSION_SECONDS`` ago."""
    signed = session.get("admin")
    if not isinstance(signed, dict) or not isinstance(signed.get("token"), int):
        session.pop("admin", None)
        return None
    since = signed.get("since", 0)
    if not isinstance(since, int | float) or not 0 <= time.time() - since < ADMIN_SESSION_SECONDS:
        session.pop("admin", None)
        return None
    cache = services().token_cache
    key = ("admin-session", signed["token"])
    hit = cache.get(key)
    if hit is not None and hit[1] > time.monotonic():
        token = hit[0]
    else:  # looked up again every few seconds: using the cookie does not extend the trust
        token = tokens.live(services().workspace, signed["token"])
        cache[key] = (token, time.monotonic() + SESSION_RECHECK_SECONDS)
    signed_out = (
        token is not None and token.signed_out_at is not None and token.signed_out_at.timestamp() >= since
    )
    if token is None or not token.allows("admin") or signed_out:
        session.pop("admin", None)
        return None
    return token.name


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
    session["admin"] = {"token": token.id, "since": time.time()}
    return redirect(url_for("admin.dashboard"))


@bp.post("/logout")
def logout():
    """Sign out: this browser, and any copy of its cookie (every sign-in of this token until now)."""
    signed = session.pop("admin", None)
    if isinstance(signed, dict) and isinstance(signed.get("token"), int):
        tokens.sign_out(services().workspace, signed["token"])
        services().token_cache.pop(("admin-session", signed["token"]), None)
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
