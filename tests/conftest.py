"""Shared fixtures: real SQLite workspaces, the bundled photos, the real Lite0 model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import recsys  # noqa: F401  (legacy-Keras switch before TensorFlow)
from recsys.settings import Settings
from recsys.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "flowers"
SHARED = ROOT.parent / "shared"


def settings_for(home: Path, **kw) -> Settings:
    return Settings(home=home, **kw)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(settings_for(tmp_path / "home"))
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory) -> Path:
    """Converted Lite0 weights, made once per test session and copied into workspaces."""
    from recsys.embedders import lite0

    cache = tmp_path_factory.mktemp("models")
    lite0.load(cache)
    return cache


@pytest.fixture(scope="session")
def embedded_home(tmp_path_factory, models_cache) -> Path:
    """A workspace holding the 200 bundled photos and their Lite0 embeddings (read-only use)."""
    from recsys.catalog import ingest
    from recsys.embedders.runner import embed_missing

    home = tmp_path_factory.mktemp("embedded") / "home"
    shutil.copytree(models_cache, home / "models")
    with Workspace(settings_for(home)) as ws:
        ingest(ws, BUNDLED, progress=False)
        report = embed_missing(ws, progress=False)
        assert report.embedded == 200
    return home


@pytest.fixture
def embedded_copy(tmp_path: Path, embedded_home: Path) -> Path:
    """A private copy of ``embedded_home`` that a test may change."""
    home = tmp_path / "home"
    shutil.copytree(embedded_home, home)
    return home


def run_cli(
    *args: str, home: Path | None = None, check: bool = False, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``recsys`` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RECSYS_HOME", None)
    cmd = [sys.executable, "-m", "recsys.cli", *args]
    if home is not None:
        cmd += ["--home", str(home)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert the process failed with exactly one ``error:`` line and no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]
