"""Check a workspace and say how to repair what is wrong (``recsys doctor``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from recsys import atomic, store


@dataclass(frozen=True)
class Finding:
    """One check: ``ok`` or not, what was found, and the command that repairs it."""

    check: str
    ok: bool
    detail: str
    repair: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def diagnose(workspace, model: str | None = None) -> list[Finding]:
    """Run every check; never changes the workspace."""
    from recsys.index import ItemIndex

    model = model or workspace.settings.model
    findings: list[Finding] = []

    current, head = store.current_revision(workspace.engine), store.head_revision()
    findings.append(
        Finding(
            "schema",
            current == head,
            f"database at revision {current}, newest is {head}",
            "recsys db upgrade",
        )
    )

    with workspace.session() as s:
        items = s.execute(select(store.Item.id, store.Item.key, store.Item.image_path)).all()
        embedded = set(s.scalars(select(store.Embedding.item_id).where(store.Embedding.model == model)))
        bad_dims = s.scalar(
            select(func.count(func.distinct(store.Embedding.dim))).where(store.Embedding.model == model)
        )
    missing_files = [key for _, key, rel in items if not workspace.image_file(rel).is_file()]
    findings.append(
        Finding(
            "image files",
            not missing_files,
            f"{len(missing_files)} of {len(items)} items have no image file"
            + (f", e.g. {missing_files[0]}" if missing_files else ""),
            "re-run `recsys ingest` on the original catalogue after deleting those items' rows, "
            "or restore the image store from a backup",
        )
    )
    unembedded = [key for item_id, key, _ in items if item_id not in embedded]
    findings.append(
        Finding(
            "embeddings",
            not unembedded,
            f"{len(unembedded)} of {len(items)} items have no {model} embedding"
            + (f", e.g. {unembedded[0]}" if unembedded else ""),
            f"recsys embed --model {model}",
        )
    )
    findings.append(
        Finding(
            "vector sizes",
            (bad_dims or 0) <= 1,
            f"{bad_dims or 0} distinct {model} vector sizes",
            f"delete the {model} embeddings and run `recsys embed --model {model}`",
        )
    )

    index = ItemIndex.load(workspace.settings.index_dir, model)
    if index is None:
        index_path, _ = ItemIndex.paths(workspace.settings.index_dir, model)
        exists = index_path.exists()
        findings.append(
            Finding(
                "index",
                not exists,
                "index file damaged or incomplete" if exists else "no index yet (built on first use)",
                f"recsys index --model {model}",
            )
        )
    else:
        with workspace.session() as s:
            ids, _ = store.load_embeddings(s, model)
        status = index.status(ids, model)
        findings.append(
            Finding(
                "index",
                status.state == "fresh",
                f"{index.meta.factory} index of {index.meta.count} items: {status.state}"
                + (f" ({status.reason})" if status.reason else ""),
                f"recsys index --model {model} (or let the next recommendation update it)",
            )
        )

    with workspace.session() as s:
        versions = s.scalars(select(store.ModelVersion).order_by(store.ModelVersion.version)).all()
    broken = [v for v in versions if not (workspace.home / v.path / "weights.weights.h5").is_file()]
    findings.append(
        Finding(
            "trained models",
            not broken,
            f"{len(versions)} two-tower version(s), {len(broken)} with missing files"
            + (f" (v{broken[0].version})" if broken else ""),
            "recsys train (a new version); older versions stay in the registry",
        )
    )
    settings = workspace.settings
    leftovers = [
        path
        for folder in (settings.images_dir, settings.index_dir, settings.models_dir)
        for path in atomic.stale_temporaries(folder, recursive=True)
    ]
    findings.append(
        Finding(
            "leftovers",
            not leftovers,
            f"{len(leftovers)} temporary file(s) from interrupted jobs"
            + (f", e.g. {leftovers[0].relative_to(workspace.home)}" if leftovers else ""),
            "harmless; re-running the job (`recsys index`, `recsys train`) clears them, or delete them",
        )
    )
    return findings
