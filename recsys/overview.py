"""The state of a workspace in one place: what the admin dashboard shows (and `recsys status`).

Each part is a small query of its own, so a slow or broken one never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from sqlalchemy import func, select

from recsys import doctor, experiments, queries, registry, store


def catalogue(workspace) -> dict:
    """Items, labelled items, users, events and impressions, counted."""
    with workspace.session() as s:
        count = lambda table: s.scalar(select(func.count()).select_from(table))  # noqa: E731
        return {
            "items": count(store.Item),
            "labelled": s.scalar(select(func.count()).where(store.Item.label.is_not(None))),
            "users": count(store.User),
            "events": count(store.Interaction),
            "impressions": count(store.Impression),
        }


def embeddings(workspace) -> list[dict]:
    """Vectors per embedding model (and their dimension)."""
    e = store.Embedding
    query = select(e.model, func.count(), func.max(e.dim)).group_by(e.model).order_by(e.model)
    with workspace.session() as s:
        return [{"model": m, "vectors": n, "dim": d} for m, n, d in s.execute(query)]


def events_per_day(workspace) -> list[tuple[date, int]]:
    """(day, events) for every day that has events, oldest first."""
    day = func.date(store.Interaction.ts)
    with workspace.session() as s:
        rows = s.execute(select(day, func.count()).group_by(day).order_by(day)).all()
    return [(d if isinstance(d, date) else date.fromisoformat(str(d)), n) for d, n in rows]


def models(workspace) -> list[dict]:
    """Trained model versions with their metrics, newest first."""
    m = store.ModelVersion
    with workspace.session() as s:
        rows = s.scalars(select(m).order_by(m.created_at.desc(), m.id.desc()).limit(50))
        return [
            {
                "kind": r.kind,
                "version": r.version,
                "base_model": r.base_model,
                "created_at": store.as_utc(r.created_at).isoformat(),
                "metrics": r.metrics or {},
            }
            for r in rows
        ]


def evaluation(workspace) -> dict | None:
    """The latest offline evaluation: its split, when, and its metric rows (recall@K per strategy)."""
    found = registry.latest_evaluations(workspace)
    if not found:
        return None
    latest = found[0]
    report = latest.report or {}
    return {
        "id": latest.id,
        "split": latest.split,
        "created_at": store.as_utc(latest.created_at).isoformat(),
        "users": report.get("users_evaluated"),
        "metrics": report.get("metrics", []),
    }


def experiment_reports(workspace) -> list[dict]:
    """Every experiment's live report, newest first."""
    return [experiments.report(workspace, e.name) for e in experiments.all_experiments(workspace)]


def overview(workspace, model: str | None = None) -> dict:
    """Everything above; a part that fails says why instead of taking the page down."""
    model = model or workspace.settings.model
    parts: dict[str, Callable[[], object]] = {
        "catalogue": lambda: catalogue(workspace),
        "embeddings": lambda: embeddings(workspace),
        "events_per_day": lambda: [(d.isoformat(), n) for d, n in events_per_day(workspace)],
        "models": lambda: models(workspace),
        "evaluation": lambda: evaluation(workspace),
        "experiments": lambda: experiment_reports(workspace),
        "index": lambda: queries.index_state(workspace, model).describe(),
        "doctor": lambda: [f.as_dict() for f in doctor.diagnose(workspace, model)],
    }
    out: dict[str, object] = {"model": model, "errors": {}}
    for name, part in parts.items():
        try:
            out[name] = part()
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the rest
            out[name] = None
            out["errors"][name] = f"{type(exc).__name__}: {exc}"
    return out
