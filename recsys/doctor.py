"""Check a workspace and say how to repair what is wrong (``recsys doctor``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from recsys import atomic, queries, registry, store, strategies


@dataclass(frozen=True)
class Finding:
    """One check: ``ok`` or not, what was found, and the command that repairs it."""

    check: str
    ok: bool
    detail: str
    repair: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def trained_models(workspace) -> Finding:
    """Every saved version and fine-tuned embedder holds the files its kind needs."""
    files = {name: cls.files for name, cls in strategies.REGISTRY.items() if cls.needs_model}
    versions = registry.versions(workspace)
    broken = [
        f"{v.kind} v{v.version}"
        for v in versions
        if registry.missing(workspace.home / v.path, files.get(v.kind, ("the folder",)))
    ]
    root = registry.embedders_folder(workspace.settings.models_dir)
    folders = (
        [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    )
    broken += [f"embedder {p.name}" for p in folders if registry.missing(p, registry.EMBEDDER_FILES)]
    kinds = Counter(v.kind for v in versions)
    if folders:
        kinds["embedder"] = len(folders)
    detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none"
    return Finding(
        "trained models",
        not broken,
        f"{sum(kinds.values())} saved model(s) ({detail}), {len(broken)} with missing files"
        + (f" ({broken[0]})" if broken else ""),
        "train it again (`recsys train`, `recsys finetune`: a new version); older ones stay registered",
    )


def diagnose(workspace, model: str | None = None) -> list[Finding]:
    """Run every check; never changes the workspace."""
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
    findings.append(
        Finding(
            "catalogue",
            bool(items),
            f"{len(items)} items in workspace {workspace.home}",
            "recsys ingest PATH, or point --home (RECSYS_HOME) at the workspace you meant",
        )
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

    state = queries.index_state(workspace, model)
    if state.index is None:
        findings.append(
            Finding(
                "index",
                not state.file_exists,
                "index file damaged or incomplete"
                if state.file_exists
                else "no index yet (built on first use)",
                f"recsys index --model {model}",
            )
        )
    else:
        status = state.status
        findings.append(
            Finding(
                "index",
                status.state == "fresh",
                f"{state.index.meta.factory} index of {state.index.meta.count} items: {status.state}"
                + (f" ({status.reason})" if status.reason else ""),
                f"recsys index --model {model} (or let the next recommendation update it)",
            )
        )
    findings.append(trained_models(workspace))
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
