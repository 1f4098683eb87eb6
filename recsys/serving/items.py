"""What serving knows of the items: the catalogue strategies rank, and each item's description."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import select

from recsys import store
from recsys.errors import NotFound
from recsys.serving.results import HistoryEntry, Recommendation, readable_title
from recsys.strategies import Catalogue

Info = tuple[str, str | None, str | None]  # (key, label, title)


def load_catalogue(workspace) -> Catalogue:
    """Every item's id (ascending), label and newness (the tie-break of popularity)."""
    with workspace.session() as session:
        rows = session.execute(
            select(store.Item.id, store.Item.label, store.Item.created_at).order_by(store.Item.id)
        ).all()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    order = sorted(range(len(rows)), key=lambda n: (rows[n][2] or datetime.min, rows[n][0]))
    newness = np.zeros(len(rows))
    newness[order] = np.arange(len(rows)) / max(len(rows) - 1, 1)
    return Catalogue(ids, np.array([r[1] for r in rows], dtype=object), newness)


def check_labels(catalogue: Catalogue, labels) -> None:
    """A one-line error when a label asked for is on no item (an empty list would not say why)."""
    unknown = sorted(set(labels) - set(catalogue.labels.tolist()))
    if unknown:
        known = sorted({label for label in catalogue.labels.tolist() if label is not None})
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise NotFound(f"no item has the label {unknown[0]!r}; labels here: {shown or 'none'}")


class Descriptions:
    """Each item's key, label and title, looked up once per process (items change rarely), so that
    describing a list costs no query once they are known.

    Args:
        workspace: Where the items are.
    """

    def __init__(self, workspace) -> None:
        self.workspace = workspace
        self._info: dict[int, Info] = {}
        self.complete = False

    def remember_all(self) -> dict[str, int]:
        """Look up every item at once (serving, before the workers fork); returns key -> id.

        At 100,000 items most lists had an item not described yet, and its query was 8% of a
        worker's time; a forked worker inherits what its parent remembered."""
        with self.workspace.engine.connect() as conn:
            rows = conn.execute(
                select(store.Item.id, store.Item.key, store.Item.label, store.Item.title)
            ).all()
        self._info.update({r[0]: (r[1], r[2], r[3]) for r in rows})
        self.complete = True
        return {r[1]: r[0] for r in rows}

    def get(self, item_ids: set[int], session=None) -> dict[int, Info]:
        """(key, label, title) by id; the ones not known yet are looked up (500 a query)."""
        missing = [i for i in item_ids if i not in self._info]
        if missing:
            if session is None:
                with self.workspace.session() as own:
                    self._load(own, missing)
            else:
                self._load(session, missing)
        return {i: self._info[i] for i in item_ids if i in self._info}

    def _load(self, session, ids: list[int]) -> None:
        for start in range(0, len(ids), 500):
            rows = session.execute(
                select(store.Item.id, store.Item.key, store.Item.label, store.Item.title).where(
                    store.Item.id.in_(ids[start : start + 500])
                )
            )
            self._info.update({r[0]: (r[1], r[2], r[3]) for r in rows})

    def entries(self, events) -> list[HistoryEntry]:
        """History events (item id, event, weight, ts) as entries to show, in the order given."""
        info = self.get({e[0] for e in events})
        return [
            HistoryEntry(i, info[i][0], ev, ts, info[i][1], info[i][2])
            for i, ev, _, ts in events
            if i in info
        ]

    def describe(
        self,
        hits: list[tuple[int, float]],
        because: dict[int, int] | None = None,
        events: dict[int, str] | None = None,
    ) -> list[Recommendation]:
        """The hits as recommendations, each with the history item that explains it (``because``:
        result id -> history item id) and what the user did with it (``events``: item -> event)."""
        if not hits:
            return []
        because = because or {}
        events = events or {}
        info = self.get({i for i, _ in hits} | set(because.values()))
        out = []
        for i, s in hits:
            if i not in info:
                continue
            why = because.get(i) if because.get(i) in info else None
            explained = {}
            if why is not None:
                key, label, title = info[why]
                explained = {
                    "because": key,
                    "because_id": why,
                    "because_title": readable_title(title, label, why),
                    "because_event": events.get(why, "view"),
                }
            out.append(Recommendation(i, info[i][0], s, info[i][1], info[i][2], **explained))
        return out
