"""Shared fixtures: real database workspaces, the bundled photos, the real Lite0 model.

By default every workspace keeps its tables in a SQLite file under its home. With
``RECSYS_TEST_DB_URL`` set to a PostgreSQL URL, every workspace home gets its own fresh database
on that server instead (named after the home folder), so the same tests run on both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

import recsys  # (legacy-Keras switch before TensorFlow)
from recsys.settings import Settings
from recsys.workspace import Workspace

recsys.quiet_tensorflow()

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "flowers"
SHARED = ROOT.parent / "shared"
ARTIFACTS = Path(os.environ.get("RECSYS_ARTIFACTS", ROOT / "artifacts"))  # screenshots, figures
TEST_DB_URL = os.environ.get("RECSYS_TEST_DB_URL") or None
ON_POSTGRES = TEST_DB_URL is not None
_created_databases: set[str] = set()

sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="about SQLite's own locking")


def _admin(sql: str, **params) -> list:
    engine = create_engine(TEST_DB_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(sql), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def _drop_database(name: str, attempts: int = 5) -> None:
    """Drop a test database, even while a server process still has it open.

    Not WITH (FORCE): PostgreSQL refuses that to a non-superuser while an autovacuum worker is in
    the database ("must be a member of the role whose process is being terminated"). So the
    sessions the tests left open (all ours) are ended first, and a plain DROP then stops
    autovacuum itself and waits for it.
    """
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        _admin(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = :n AND usename = current_user AND pid <> pg_backend_pid()",
            n=name,
        )
        try:
            _admin(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except OperationalError:  # still in use: a session that came back, or a slow one
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def _database_name(home: Path) -> str:
    return "recsys_t_" + hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:24]


def db_url_for(home: Path) -> str | None:
    """The database URL of the workspace at ``home``: None (its SQLite file) unless on PostgreSQL."""
    if not ON_POSTGRES:
        return None
    name = _database_name(home)
    if name not in _created_databases:
        if not _admin("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
            _admin(f'CREATE DATABASE "{name}"')
        _created_databases.add(name)
    return make_url(TEST_DB_URL).set(database=name).render_as_string(hide_password=False)


def copy_home(src: Path, dst: Path) -> Path:
    """A private copy of a workspace: its folder and, on PostgreSQL, its database."""
    shutil.copytree(src, dst)
    if ON_POSTGRES:
        source, target = _database_name(src), _database_name(dst)
        _drop_database(target)
        _admin(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
        _created_databases.add(target)
    return dst


@contextlib.contextmanager
def db_engine(home: Path) -> Iterator[Engine]:
    """A plain engine on the workspace's database (SQLite or PostgreSQL), without migrating it."""
    engine = create_engine(db_url_for(home) or f"sqlite:///{(Path(home) / 'recsys.db').resolve()}")
    try:
        yield engine
    finally:
        engine.dispose()


def db_rows(home: Path, sql: str) -> list[tuple]:
    """Run one read query on the workspace's database."""
    with db_engine(home) as engine, engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).all()]


def cli_env(home: Path | None = None, extra: dict | None = None) -> dict:
    """Environment for a ``recsys`` subprocess: no stray RECSYS_HOME, the test database URL."""
    env = {**os.environ, **(extra or {})}
    env.pop("RECSYS_HOME", None)
    if home is not None and ON_POSTGRES:
        env["RECSYS_DB_URL"] = db_url_for(home)
    return env


@contextlib.contextmanager
def running_server(
    home: Path,
    *extra_args: str,
    cwd: Path | None = None,
    home_arg: str | None = None,
    env: dict | None = None,
) -> Iterator[str]:
    """``recsys serve`` on a free loopback port (a real HTTP server); yields its base URL.

    ``cwd`` and ``home_arg`` run it from another folder with ``--home`` as given (e.g. relative),
    the way a user types it. What the server printed is in ``last_server_log`` once it stopped.
    """
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "recsys.cli", "serve", "--home", home_arg or str(home), "--port", str(port)]
    cmd += extra_args
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=cli_env(home, env), cwd=cwd
    )
    server_log.append(log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"server died:\n{log.read()}") from None
                if time.time() > deadline:
                    raise AssertionError("server did not start within 120 s") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server_log.remove(log)
        log.seek(0)
        last_server_log[:] = [log.read()]
        log.close()


server_log: list = []  # the running servers' log files
last_server_log: list[str] = [""]  # what the last stopped server printed


def ensure_system_package(command: str, package: str, why: str) -> str:
    """The path of ``command``, installing Debian's ``package`` when root can; else skip, saying why.

    Tests that need a program outside Python (chromium for the browser, Java for Spark) install
    it the way `.ci/run` does, so the README's test command works on a fresh machine.
    """
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", package]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        found = shutil.which(command)
    if not found:
        pytest.skip(f"{why} needs `{command}`: install it (Debian: apt-get install {package})")
    return found


def save_figures(name: str, figures: dict) -> None:
    """Keep a test's measured figures in ``artifacts/<name>-<database>.json`` (for closing notes)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    database = "postgresql" if ON_POSTGRES else "sqlite"
    (ARTIFACTS / f"{name}-{database}.json").write_text(
        json.dumps({**figures, "database": database}, indent=2)
    )
    print(name, figures)


def settings_for(home: Path, **kw) -> Settings:
    return Settings(home=home, db_url=db_url_for(home), **kw)


def make_token(home: Path, scope: str = "write", name: str | None = None) -> str:
    """A real API token in the workspace at ``home`` (made the way `recsys token create` makes it)."""
    from recsys import tokens

    with Workspace(settings_for(home)) as ws:
        return tokens.create(ws, name or f"test-{scope}-{os.urandom(3).hex()}", scope)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def csrf_token(html: bytes | str) -> str:
    """The CSRF token a page's forms carry (what a real browser would post back)."""
    import re

    text = html.decode() if isinstance(html, bytes) else html
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases():
    yield
    for name in sorted(_created_databases):
        _drop_database(name)


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
    return copy_home(embedded_home, tmp_path / "home")


def run_cli(
    *args: str, home: Path | None = None, check: bool = False, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``recsys`` console entry point in a subprocess."""
    full_env = cli_env(home, env)
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


@pytest.fixture
def make_app(embedded_copy):
    """Apps with settings of the test's own; limits asked of it are "per year", not "per minute".

    The limiter's windows are aligned to the clock, and its sliding-window counter floors the previous
    window's share, so a test that crossed a minute boundary got one request past "2 per minute" (CI).
    """
    apps = []

    def make(demo: bool = False, **settings):
        from web import create_app

        app = create_app(
            {"RECSYS_SETTINGS": settings_for(embedded_copy, **settings), "RECSYS_DEMO": demo, "TESTING": True}
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["recsys"].workspace.close()
