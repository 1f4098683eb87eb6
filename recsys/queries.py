"""Read models the web, the CLI and the dashboard share: small queries with a name, so that no shell
reads tables itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sqlalchemy import desc, func, select

from recsys import store
from recsys.index import IndexStatus, ItemIndex
from recsys.keys import item_key


def health(workspace, model: str) -> dict:
    """Items, and how many have a vector of ``model``: what /api/health answers."""
    with workspace.session() as s:
        items = s.scalar(select(func.count()).select_from(store.Item))
        embedded = s.scalar(
            select(func.count()).select_from(store.Embedding).where(store.Embedding.model == model)
        )
    return {"items": items, "embedded": embedded, "model": model}


class Person(NamedTuple):
    key: str
    events: int


@dataclass(frozen=True)
class People:
    """Some users with their event counts, and how many there are in all."""

    shown: list[Person]
    total: int


def people(workspace, limit: int = 30, pinned: tuple[str, ...] = ()) -> People:
    """The ``pinned`` users that exist, then the most active ones (the demo's People list)."""
    counted = (
        select(store.User.key, func.count(store.Interaction.id).label("n"))
        .join(store.Interaction, store.Interaction.user_id == store.User.id)
        .group_by(store.User.key)
    )
    with workspace.session() as s:
        first = (
            [Person(k, n) for k, n in s.execute(counted.where(store.User.key.in_(pinned)))] if pinned else []
        )
        rest = s.execute(
            counted.where(store.User.key.not_in(pinned))
            .order_by(desc("n"), store.User.key)
            .limit(limit - len(first))
        )
        total = s.scalar(select(func.count(func.distinct(store.Interaction.user_id))))
    return People(
        [*sorted(first, key=lambda p: pinned.index(p.key)), *(Person(k, n) for k, n in rest)], total
    )


def user_exists(workspace, key: str) -> bool:
    with workspace.session() as s:
        return s.scalar(select(store.User.id).where(store.User.key == key)) is not None


def item(workspace, key: str) -> store.Item | None:
    """The catalogue entry with this key, or None."""
    key = item_key(key)
    with workspace.session() as s:
        return s.scalar(select(store.Item).where(store.Item.key == key))


def image_path(workspace, item_id: int):
    """Where the image store keeps an item's picture (None: no such item)."""
    with workspace.session() as s:
        rel = s.scalar(select(store.Item.image_path).where(store.Item.id == item_id))
    return None if rel is None else workspace.image_file(rel)


def first_item_added(workspace):
    """When the catalogue's first item was added (None: no item yet)."""
    with workspace.session() as s:
        first = s.scalar(select(func.min(store.Item.created_at)))
    return None if first is None else store.as_utc(first)


def first_key_per_label(workspace) -> list[str]:
    """The first item key of each label, by label (what the demo shows around)."""
    with workspace.session() as s:
        return list(
            s.scalars(select(func.min(store.Item.key)).group_by(store.Item.label).order_by(store.Item.label))
        )


@dataclass(frozen=True)
class IndexState:
    """A model's saved index and how it relates to the stored vectors.

    Attributes:
        index: The index, when a usable one is saved (else None).
        file_exists: Whether an index file is there at all (None index + file: it is damaged).
        status: Fresh, or stale and why (None without an index).
    """

    index: ItemIndex | None
    file_exists: bool
    status: IndexStatus | None

    def describe(self) -> dict | None:
        if self.index is None:
            return None
        return {**self.index.describe(), "status": self.status.state, "reason": self.status.reason}


def index_state(workspace, model: str) -> IndexState:
    """``recsys index --show``, ``recsys doctor`` and the dashboard ask this one question."""
    folder = workspace.settings.index_dir
    index = ItemIndex.load(folder, model)
    if index is None:
        return IndexState(None, ItemIndex.paths(folder, model)[0].exists(), None)
    e = store.Embedding
    with workspace.session() as s:
        ids = np.fromiter(s.scalars(select(e.item_id).where(e.model == model).order_by(e.item_id)), np.int64)
    return IndexState(index, True, index.status(ids, model))
