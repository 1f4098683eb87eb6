"""What recsys saves and finds again: trained versions, fine-tuned embedders, evaluation reports.

Every saved thing is a folder under ``<home>/models/`` that is complete or absent: it is written
through ``atomic.folder`` (a killed run leaves only a temporary that the next run clears), and its
kind lists the files that make it complete, which saving checks and ``recsys doctor`` checks again.

- Trained versions (two-tower, EASE, ALS): ``models/<kind>/v<N>/``, numbered per kind, with a row
  in the ``models`` table (parameters, metrics) added once the folder is in place.
- Fine-tuned embedders: ``models/embedders/<name>/``, by name; ``meta.json`` is their record (a
  Spark executor finds them with the folder alone, no database).
- Evaluation reports: rows of the ``evaluations`` table; ``auto`` serves the best of the latest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sqlalchemy import func, select

from recsys import atomic, store
from recsys.errors import RecsysError

# --- trained versions ------------------------------------------------------------------------------


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


def versions(workspace) -> list[store.ModelVersion]:
    """Every saved version of every kind, oldest first."""
    with workspace.session() as s:
        return list(s.scalars(select(store.ModelVersion).order_by(store.ModelVersion.id)))


def missing(found: Path, files: Sequence[str]) -> list[str]:
    """Which of ``files`` a saved folder lacks (all of them when the folder is gone)."""
    return [name for name in files if not (found / name).is_file()]


def save(
    workspace,
    kind: str,
    write: Callable[[Path], None],
    *,
    files: Sequence[str],
    base_model: str,
    params: dict,
    metrics: dict,
) -> tuple[int, Path]:
    """Write a new version's files with ``write(folder)``, check ``files`` are all there, put the
    folder in place, then register it."""
    with workspace.session() as s:
        version = (
            s.scalar(select(func.max(store.ModelVersion.version)).where(store.ModelVersion.kind == kind)) or 0
        ) + 1
    final = folder(workspace, kind, version)
    with atomic.folder(final) as tmp:
        write(tmp)
        lacking = missing(tmp, files)
        if lacking:
            raise RecsysError(f"{kind} v{version}: saving wrote no {', '.join(lacking)}")
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


def path_of(workspace, row: store.ModelVersion, files: Sequence[str] = ()) -> Path:
    """The folder of a registered version, or a one-line error when it (or one of ``files``) is gone."""
    found = workspace.home / row.path
    lacking = missing(found, files) if found.is_dir() else ["the folder"]
    if lacking:
        raise RecsysError(f"{row.kind} v{row.version}: model files missing in {found} ({', '.join(lacking)})")
    return found


# --- fine-tuned embedders ----------------------------------------------------------------------------

#: What makes a fine-tuned embedder complete.
EMBEDDER_FILES = ("weights.h5", "meta.json")
#: Characters an embedder's name may hold (it is a folder name and a stored model name).
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def embedders_folder(models_dir: Path) -> Path:
    return Path(models_dir) / "embedders"


def embedders(models_dir: Path) -> dict[str, dict]:
    """name -> its meta.json, for every complete fine-tuned embedder in the workspace."""
    found = {}
    root = embedders_folder(models_dir)
    if root.is_dir():
        for meta in sorted(root.glob("*/meta.json")):
            if not meta.parent.name.startswith(".") and not missing(meta.parent, EMBEDDER_FILES):
                found[meta.parent.name] = json.loads(meta.read_text())
    return found


def embedder_path(models_dir: Path, name: str) -> Path:
    return embedders_folder(models_dir) / name


def embedder_name(models_dir: Path, requested: str | None, stem: str, builtin: Iterable[str]) -> str:
    """A free name for a new embedder: ``requested`` if valid and free, else ``stem``, numbered."""
    taken = set(embedders(models_dir)) | set(builtin)
    if requested is not None:
        name = requested
        if not name or set(name.lower()) - NAME_CHARS or name[0] in ".-_" or len(name) > 64:
            raise RecsysError(f"model name {name!r}: 1 to 64 letters, digits, '-', '_' or '.'")
        if name in taken:
            raise RecsysError(f"a model called {name!r} exists: pick another --name")
        return name
    n, name = 1, stem
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name


def save_embedder(models_dir: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write a fine-tuned embedder's files with ``write(folder)``, checked, then put it in place."""
    final = embedder_path(models_dir, name)
    with atomic.folder(final) as tmp:
        write(tmp)
        lacking = missing(tmp, EMBEDDER_FILES)
        if lacking:
            raise RecsysError(f"embedder {name}: saving wrote no {', '.join(lacking)}")
    return final


# --- evaluation reports ----------------------------------------------------------------------------


def save_evaluation(workspace, split: str, params: dict, rows: list[dict], report: dict) -> int:
    """Keep an evaluation: its split, recall (and version) per strategy, and the whole report."""
    with workspace.session() as s, s.begin():
        row = store.Evaluation(
            created_at=store.utcnow(), split=split, params=params, strategies=rows, report=report
        )
        s.add(row)
        s.flush()
        return row.id


def latest_evaluations(workspace, split: str | None = None) -> list[store.Evaluation]:
    """Stored evaluations, newest first (optionally of one split)."""
    query = select(store.Evaluation).order_by(store.Evaluation.id.desc()).limit(50)
    if split is not None:
        query = query.where(store.Evaluation.split == split)
    with workspace.session() as s:
        return list(s.scalars(query))
