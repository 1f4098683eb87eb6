"""Files and folders that appear whole or not at all, and the debris a killed writer leaves behind.

Every writer puts its bytes in ``.NAME.PID-N.tmp`` beside the target and renames it into place, so
readers see the old file or the new one, never half of one. A ``kill -9`` can only leave such a
temporary behind; ``clear_stale`` removes the ones whose writing process is gone. ``folder`` does
the same for a folder of files (a saved model version, a static site).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

_counter = itertools.count()
_TEMPORARY = re.compile(r"^\..+\.(\d+)-\d+\.tmp$")


def temporary(path: Path) -> Path:
    """A fresh temporary name beside ``path``, owned by this process."""
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_counter)}.tmp")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def folder(final: Path, *, clear: bool = True) -> Iterator[Path]:
    """A folder that appears at ``final`` whole or not at all: fill the one this yields; when the
    block ends without an error it is renamed into place, and a folder already at ``final`` goes
    only once the new one is there. ``clear``: first remove what killed writers left beside it
    (folders recsys owns; not a user's own folder)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if clear:
        clear_stale(final.parent)
    tmp = temporary(final)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = temporary(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_temporaries(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Temporaries in ``folder`` whose writer is no longer running (killed mid-write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    stale = []
    for path in candidates:
        match = _TEMPORARY.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not alive(int(match.group(1))):
            stale.append(path)
    return sorted(stale)


def clear_stale(folder: Path, *, recursive: bool = False) -> int:
    """Delete what killed writers left in ``folder``; return how many were removed."""
    removed = 0
    for path in stale_temporaries(folder, recursive=recursive):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed
