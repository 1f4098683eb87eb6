"""What every request of one app shares: the workspace, the recommender, and the demo switch."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

from flask import current_app
from PIL import Image

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
        if models:
            self._warm_uploads()

    def _warm_uploads(self) -> None:
        """Load the embedding model and run it once, before the first request: the first upload
        would otherwise wait seconds for it (7 s on 2 cores). Not in a thread beside requests:
        TensorFlow's import points the process's stderr at /dev/null for a few seconds (its start-up
        noise), and request log lines written meanwhile were lost."""
        from recsys.catalog import prepare_image

        picture = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 120, 40)).save(picture, "JPEG")
        try:
            jpeg = prepare_image(picture.getvalue(), self.settings.max_side)
            self.workspace.embedder(self.recommender.model).embed_bytes(jpeg)
        except Exception as exc:  # noqa: BLE001 - the first upload will load it, and say what is wrong
            logging.getLogger("recsys").warning("the embedding model did not load ahead of uploads: %s", exc)


def services() -> Services:
    return current_app.extensions["recsys"]


def rec() -> Recommender:
    return services().rec()
