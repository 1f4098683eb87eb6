"""The model registry: trained versions of a kind (two-tower, ease, als), their files and metrics.

Files go to ``<home>/models/<kind>/v<N>/``, written in a temporary folder and renamed into place,
so a killed run leaves no version behind; the registry row is added only after the folder exists.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from recsys import atomic, store
from recsys.errors import RecsysError


def folder(workspace, kind: str, version: int) -> Path:
    return workspace.settings.models_dir / kind / f"v{version}"


def latest(workspace, kind: str) -> store.ModelVersion | None:
    with workspace.session() as s:
        return s.scalar(
            select(store.ModelVersion)
            .where(store.ModelVersion.kind == kind)
            .order_by(store.ModelVersion.version.desc())
        )


def get(workspace, kind: str, version: int | None) -> store.ModelVersion:
    """A version (default: the latest), or a one-line error saying how to make one."""
    if version is None:
        found = latest(workspace, kind)
        if found is None:
            raise RecsysError(f"no {kind} model yet: run `recsys train --strategy {kind}`")
        return found
    with workspace.session() as s:
        found = s.scalar(
            select(store.ModelVersion).where(
                store.ModelVersion.kind == kind, store.ModelVersion.version == version
            )
        )
    if found is None:
        raise RecsysError(f"no {kind} model version {version}")
    return found


def exists(workspace, kind: str, version: int) -> bool:
    with workspace.session() as s:
        row = s.scalar(
            select(store.ModelVersion).where(
                store.ModelVersion.kind == kind, store.ModelVersion.version == version
            )
        )
    return row is not None and (workspace.home / row.path).is_dir()


def save(
    workspace,
    kind: str,
    write: Callable[[Path], None],
    *,
    base_model: str,
    params: dict,
    metrics: dict,
) -> tuple[int, Path]:
    """Write a new version's files with ``write(folder)`` (atomically), then register it."""
    with workspace.session() as s:
        version = (
            s.scalar(select(func.max(store.ModelVersion.version)).where(store.ModelVersion.kind == kind)) or 0
        ) + 1
    final = folder(workspace, kind, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    atomic.clear_stale(final.parent)  # folders of earlier, killed runs
    tmp = atomic.temporary(final)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    with workspace.session() as s, s.begin():
        s.add(
            store.ModelVersion(
                kind=kind,
                version=version,
                base_model=base_model,
                path=str(final.relative_to(workspace.home)),
                params=params,
                metrics=metrics,
            )
        )
    return version, final


def path_of(workspace, row: store.ModelVersion) -> Path:
    found = workspace.home / row.path
    if not found.is_dir():
        raise RecsysError(f"{row.kind} v{row.version}: model files missing in {found}")
    return found
