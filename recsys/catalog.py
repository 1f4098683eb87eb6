"""The catalogue: read a folder or CSV of images, fetch and shrink each one, store it.

Three single-purpose units, wired together in ``ingest``:

* reader  - ``read_catalog(path)``: entries (key, source, label, title) and row-level problems;
* mapper  - ``fetch`` + ``prepare_image``: bytes from disk or HTTP, validated and resized JPEG;
* writer  - the image file (atomic rename) and the ``items`` row (committed in batches).
"""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from recsys import atomic, store
from recsys.errors import NotAnImage, RecsysError, TooLarge
from recsys.keys import item_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
CSV_COLUMNS = ("key", "image", "label", "title")


class BadImage(Exception):
    """One image could not be used; the message is the reason shown to the user.

    ``decodable`` is False when the bytes are not a picture at all (empty, unknown format,
    corrupt); ``too_large`` is True for a picture refused for its size (pixels or bytes).
    """

    def __init__(self, reason: str, *, decodable: bool = True, too_large: bool = False) -> None:
        super().__init__(reason)
        self.decodable = decodable
        self.too_large = too_large


@dataclass(frozen=True)
class CatalogEntry:
    """One row of the catalogue as the user described it.

    Attributes:
        key: Stable external id (folder: ``label/file-stem``; CSV: the ``key`` column).
        source: Local path or http(s) URL of the original image.
        label: Category (folder name or CSV ``label``), or None.
        title: Human-readable name (CSV ``title``, else the file stem).
        meta: Any extra CSV columns.
    """

    key: str
    source: str
    label: str | None = None
    title: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class IngestReport:
    added: int = 0
    already_present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "already_present": self.already_present,
            "failed": [{"key": k, "reason": r} for k, r in self.failed],
        }


# --- reader ----------------------------------------------------------------------------------


def read_catalog(path: str | Path) -> tuple[list[CatalogEntry], list[tuple[str, str]]]:
    """Entries of a folder (sub-folder = label) or CSV, plus (where, reason) for unusable rows."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise RecsysError(
            f"{path}: a picture, not a catalogue: ingest takes a folder of pictures (one sub-folder "
            f"per label) or a CSV of {','.join(CSV_COLUMNS)}"
        )
    if path.is_file():
        return _read_csv(path)
    raise RecsysError(f"{path}: no such folder or CSV file")


def _read_folder(root: Path) -> tuple[list[CatalogEntry], list[tuple[str, str]]]:
    entries, problems = [], []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not file.is_file():
            continue
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = rel.parts[0] if len(rel.parts) > 1 else None
        key = rel.with_suffix("").as_posix()
        try:
            item_key(key, "key (the file's path)")
            store.check_text(label or "", "label (the sub-folder's name)", store.LABEL_LENGTH)
        except RecsysError as exc:
            problems.append((str(file), str(exc)))
            continue
        entries.append(CatalogEntry(key, str(file.resolve()), label, file.stem))
    return entries, problems


def _read_csv(csv_path: Path) -> tuple[list[CatalogEntry], list[tuple[str, str]]]:
    import pandas as pd

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RecsysError(f"{csv_path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("key", "image") if c not in frame.columns]
    if missing:
        raise RecsysError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}"
        )
    extra = [c for c in frame.columns if c not in CSV_COLUMNS]
    entries, problems, seen = [], [], set()
    for row_number, row in enumerate(frame.to_dict("records"), start=2):
        where = f"{csv_path.name}:{row_number}"
        key, image = row["key"].strip(), row["image"].strip()
        if not key:
            problems.append((where, "empty key"))
            continue
        if not image:
            problems.append((key, f"{where}: empty image column"))
            continue
        if key in seen:
            problems.append((key, f"{where}: duplicate key in the CSV"))
            continue
        seen.add(key)
        label, title = row.get("label", "").strip() or None, row.get("title", "").strip() or None
        meta = {c: row[c] for c in extra if row[c] != ""}
        try:
            item_key(key, "key")
            store.check_text(label or "", "label", store.LABEL_LENGTH)
            for name, value in [("image", image), ("title", title or ""), *meta.items()]:
                store.check_text(value, name)
        except RecsysError as exc:
            problems.append((where, str(exc)))
            continue
        if not image.startswith(("http://", "https://")):
            image = str((csv_path.parent / image).resolve())
        entries.append(CatalogEntry(key=key, source=image, label=label, title=title, meta=meta))
    return entries, problems


# --- mapper ----------------------------------------------------------------------------------


def fetch(source: str, timeout: float = 20.0, retries: int = 3) -> bytes:
    """The bytes of a local file or URL; transient HTTP failures are retried with backoff."""
    if not source.startswith(("http://", "https://")):
        try:
            with open(source, "rb") as fh:
                return fh.read(MAX_DOWNLOAD_BYTES + 1)
        except OSError as exc:
            raise BadImage(f"cannot read {source}: {exc.strerror or exc}") from None
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        try:
            request = urllib.request.Request(source, headers={"User-Agent": "recsys/0.1"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(MAX_DOWNLOAD_BYTES + 1)
            if len(data) > MAX_DOWNLOAD_BYTES:
                raise BadImage(f"download larger than {MAX_DOWNLOAD_BYTES // 2**20} MB")
            return data
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"download failed: {reason}"
    raise BadImage(f"{last} after {attempt + 1} attempt(s): {source}")


#: The formats recsys decodes (Pillow knows dozens; icons, JPEG 2000 or game textures are refused).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def prepare_image(data: bytes, max_side: int, max_pixels: int = 64_000_000) -> bytes:
    """Validate encoded image bytes and return them as an RGB JPEG no larger than ``max_side``.

    Only the common photo formats are opened (``IMAGE_FORMATS``: fewer decoders, fewer ways in).
    The size is checked from the header, before any pixel is decoded; JPEGs are decoded at a
    reduced scale (``draft``), and other formats are reduced by whole factors right after
    decoding, before they are converted to RGB.
    """
    if not data:
        raise BadImage("empty file", decodable=False)
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise BadImage(f"file larger than {MAX_DOWNLOAD_BYTES // 2**20} MB", too_large=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels:,} "
                    "(decompression bomb?)",
                    too_large=True,
                )
            if width < 1 or height < 1:
                raise BadImage(f"degenerate size {width}x{height}")
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (or not a JPEG, PNG, WebP, GIF, BMP or TIFF)", decodable=False) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(
            f"image too large: more than the limit of {max_pixels:,} pixels (decompression bomb?)",
            too_large=True,
        ) from None
    except Exception:  # Pillow's decoders raise many kinds; every one means "cannot use this"
        raise BadImage("corrupt or truncated image: its pixels do not decode", decodable=False) from None
    try:
        return _shrink(image, max_side)
    except Exception:  # a header that decoded but pixels that do not convert
        raise BadImage("corrupt image: its pixels do not convert to RGB", decodable=False) from None


def prepare_query(data: bytes, max_side: int, max_pixels: int) -> bytes:
    """``prepare_image`` for a picture someone searches with: its faults as the typed errors the
    web answers with (413 too large, 415 not a picture, 400 damaged)."""
    try:
        return prepare_image(data, max_side, max_pixels)
    except BadImage as exc:
        error = TooLarge if exc.too_large else RecsysError if exc.decodable else NotAnImage
        raise error(str(exc)) from None


def _shrink(image: Image.Image, max_side: int) -> bytes:
    """The decoded picture upright, reduced, on white, as a JPEG whose longest side is ``max_side``."""
    ImageOps.exif_transpose(image, in_place=True)
    factor = max(image.size) // (2 * max_side)  # as thumbnail's reducing_gap=2 would, but before RGB
    if factor > 1:
        if image.mode == "1":  # one byte a pixel either way; "1" cannot be reduced, "L" can
            image = image.convert("L")
        elif image.mode in ("P", "PA"):  # palettes cannot be averaged: expand, only as far as needed
            opaque = image.mode == "P" and "transparency" not in image.info
            image = image.convert("RGB" if opaque else "RGBA")
        if image.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
            image = image.reduce(factor)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    else:
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def image_relpath(key: str) -> str:
    """Where an item's image lives inside the image store: derived from the key, never from input."""
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return f"{digest[:2]}/{digest}.jpg"


# --- runner ----------------------------------------------------------------------------------


def ingest(
    workspace,
    path: str | Path,
    *,
    progress: bool = True,
    on_problem=None,
) -> IngestReport:
    """Add every new entry of a folder or CSV catalogue to the workspace."""
    entries, problems = read_catalog(path)
    return ingest_entries(workspace, entries, problems, progress=progress, on_problem=on_problem)


def ingest_entries(
    workspace,
    entries: list[CatalogEntry],
    problems: list[tuple[str, str]] = (),
    *,
    progress: bool = True,
    on_problem=None,
) -> IngestReport:
    """Fetch, validate, shrink and store every entry whose key is not in the workspace yet."""
    from tqdm import tqdm

    settings = workspace.settings
    atomic.clear_stale(settings.images_dir, recursive=True)  # half-written files of a killed run
    report = IngestReport()
    for where, reason in problems:
        _problem(report, on_problem, where, reason)
    with workspace.session() as session:
        present = set(store.item_ids(session, (e.key for e in entries)))
    todo = [e for e in entries if e.key not in present]
    report.already_present = len(entries) - len(todo)

    def work(entry: CatalogEntry) -> tuple[CatalogEntry, str | None, str | None]:
        try:
            jpeg = prepare_image(
                fetch(entry.source, settings.timeout, settings.retries),
                settings.max_side,
                settings.max_pixels,
            )
        except BadImage as exc:
            return entry, None, str(exc)
        rel = image_relpath(entry.key)
        atomic.write_bytes(settings.images_dir / rel, jpeg)
        return entry, rel, None

    pending: list[dict] = []

    def flush() -> None:
        if pending:
            with workspace.session() as session, session.begin():
                report.added += store.insert_ignoring_duplicates(session, store.Item, pending)
            pending.clear()

    bar = tqdm(total=len(todo), unit="img", desc="ingest", disable=not progress, leave=True)
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for entry, rel, error in _bounded_map(pool, work, todo, settings.workers * 4):
            bar.update(1)
            if error:
                _problem(report, on_problem, entry.key, error)
                continue
            pending.append(
                {
                    "key": entry.key,
                    "image_path": rel,
                    "source": entry.source,
                    "label": entry.label,
                    "title": entry.title,
                    "meta": entry.meta or None,
                    "created_at": store.utcnow(),
                }
            )
            if len(pending) >= 256:
                flush()
    flush()
    bar.close()
    return report


def _problem(report: IngestReport, on_problem, where: str, reason: str) -> None:
    report.failed.append((where, reason))
    if on_problem:
        on_problem(where, reason)


def _bounded_map(pool: ThreadPoolExecutor, fn, items: list, window: int) -> Iterator:
    """``pool.map`` that keeps at most ``window`` tasks in flight (memory stays flat)."""
    from collections import deque

    futures: deque = deque()
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) >= window:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()
