"""What every request of one app shares: the workspace, the recommender, and the demo switch."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from recsys import store
from recsys.events import Event
from recsys.recommend import Recommender
from recsys.settings import Settings
from recsys.workspace import Workspace


@dataclass
class Services:
    """One per app (``app.extensions["recsys"]``).

    Attributes:
        settings: The workspace's settings (limits, cookie flags).
        workspace: The open workspace.
        recommender: The one ``Recommender`` all requests use (its caches are per process).
        demo: Demo mode: other people's pages and the People list are shown (loopback only).
    """

    settings: Settings
    workspace: Workspace
    recommender: Recommender
    demo: bool = False
    token_cache: dict = field(default_factory=dict)  # token -> (Token, trusted until), see identity

    def rec(self) -> Recommender:
        """The recommender with its vectors loaded: the first request loads, the others wait."""
        self.recommender.space()
        return self.recommender

    def warm_up(self, *, models: bool = True) -> None:
        """Do once, before the first visitor, what the first request would otherwise pay for:
        vectors and index, the catalogue, item ids and popularity, and one search end to end.

        ``models=False`` leaves trained models (TensorFlow) alone: a parent process that forks
        workers must not start TensorFlow's threads, which do not survive a fork.
        """
        r = self.rec()
        r.catalogue()
        r.remember_items()
        popular = r.popular(1)
        if popular:
            history = [Event(popular[0].item_id, "view", None, store.utcnow())]
            r.recommend_for_history(history, 10, strategy="average")
            if models:
                r.recommend_for_history(history, 10, strategy="auto")


def services() -> Services:
    return current_app.extensions["recsys"]


def rec() -> Recommender:
    return services().rec()
