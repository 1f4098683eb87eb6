"""A workspace: one database, one image store, cached model weights and indexes, under ``home``.

Opening one migrates its database, so every command works on a fresh folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from recsys import store
from recsys.errors import RecsysError
from recsys.settings import Settings


def private(folder: Path) -> None:
    """Make ``folder`` (mode 0700), or take group and other access off one of ours made earlier."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        folder.chmod(0o700)


class Workspace:
    """Owns the engine and paths; jobs and the ``Recommender`` take one of these.

    Args:
        settings: Where the workspace lives and how jobs run (see ``Settings``).
        migrate: Bring the schema to the newest revision on open (off only for ``db`` commands).
    """

    def __init__(self, settings: Settings | None = None, *, migrate: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.home = Path(self.settings.home)
        if not self.home.exists():  # private: it holds the database, the pictures and the web secret
            missing = [p for p in (self.home, *self.home.parents) if not p.exists()]
            for folder in reversed(missing):  # parents made here too: none world-writable
                folder.mkdir(mode=0o700, exist_ok=True)
        settings = self.settings
        for folder in (self.home, settings.images_dir, settings.index_dir, settings.models_dir):
            private(folder)
        self.engine = store.open_engine(self.settings.database_url)
        if migrate:
            store.migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.writing = store.WriteGate(self.engine)  # `with workspace.writing():` around hot writes

    def session(self) -> Session:
        return self._sessions()

    def require_items(self) -> None:
        """A one-line error naming this workspace when it holds no item yet: a command run from
        another folder opens a new, empty workspace there, and should say so, and how to point at
        the one meant."""
        from sqlalchemy import func, select

        with self.session() as s:
            empty = s.scalar(select(func.count()).select_from(store.Item)) == 0
        if empty:
            raise RecsysError(
                f"workspace {self.home} has no items yet: `recsys ingest PATH` adds some, or point "
                "--home (RECSYS_HOME) at the workspace you meant"
            )

    def image_file(self, relpath: str) -> Path:
        return self.settings.images_dir / relpath

    def embedder(self, model: str | None = None):
        from recsys.embedders import load_embedder

        return load_embedder(model or self.settings.model, self.settings.models_dir)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
