"""`recsys demo`, the Quickstart command, as a new user runs it: a fresh workspace, set up and served,
search by photo answering, `auto` serving a measured choice, and Ctrl+C stopping it at once."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

from recsys import overview
from recsys.workspace import Workspace
from tests.conftest import (
    BUNDLED,
    bearer,
    cli_env,
    last_server_log,
    running_server,
    save_figures,
    settings_for,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_the_demo_serves_search_by_photo_a_measured_auto_and_stops_on_ctrl_c(tmp_path, models_cache):
    """Findings: under `recsys demo` an upload hung forever (its workers were forked after the demo
    had run TensorFlow to embed), Ctrl+C then took 30 s and logged a SIGKILL, the demo never
    evaluated (auto said "no evaluation yet"), and its simulated visitors sat years before today."""
    home = tmp_path / "home"
    shutil.copytree(models_cache, home / "models")  # Lite0's converted weights: the rest is fresh
    port = _free_port()
    log = (tmp_path / "demo.log").open("w+")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "demo", "--quiet", "--port", str(port), "--home", str(home)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(home),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, Path(log.name).read_text()
                assert time.perf_counter() - started < 240, "the demo did not serve within 240 s"
                time.sleep(0.3)
        to_serving = time.perf_counter() - started
        printed = Path(log.name).read_text()
        token = re.search(r"API token \(write scope, named 'demo'\): (\S+)", printed).group(1)
        assert "auto serves" in printed and "best recall@10 in evaluation" in printed, printed
        photo = sorted((BUNDLED / "sunflower").glob("*.jpg"))[0]
        body, content_type = _multipart("image", photo.name, photo.read_bytes())
        request = urllib.request.Request(
            f"{url}/api/search?k=3", data=body, headers={**bearer(token), "Content-Type": content_type}
        )
        asked = time.perf_counter()
        with urllib.request.urlopen(request, timeout=90) as response:
            found = json.loads(response.read())["similar"]
        search_seconds = time.perf_counter() - asked
        assert len(found) == 3 and found[0]["label"] == "sunflower", found
        with Workspace(settings_for(home)) as ws:
            days = [d for d, _ in overview.events_per_day(ws)]
        assert days[-1] - days[0] <= timedelta(days=70), (days[0], days[-1])  # one readable chart
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl+C sends
        asked_to_stop = time.perf_counter()
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    stop_seconds = time.perf_counter() - asked_to_stop
    printed = Path(log.name).read_text()
    assert stop_seconds < 5, (stop_seconds, printed[-2000:])
    assert "SIGKILL" not in printed and "Traceback" not in printed, printed[-3000:]
    save_figures(
        "demo",
        {
            "seconds_to_serving": round(to_serving, 1),
            "search_by_photo_seconds": round(search_seconds, 2),
            "seconds_to_stop_on_ctrl_c": round(stop_seconds, 2),
        },
    )


def test_the_server_logs_in_one_format_and_leaves_nothing_in_the_home_folder(embedded_copy, tmp_path):
    """Findings: gunicorn's own log lines ("[2026-...] [123] [INFO] Booting worker") were mixed with
    recsys's, and it wrote a control socket into the user's home folder (~/.gunicorn/gunicorn.ctl)."""
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    with running_server(embedded_copy, env={"HOME": str(user_home), "XDG_RUNTIME_DIR": ""}) as url:
        with urllib.request.urlopen(f"{url}/", timeout=30) as response:
            assert response.status == 200
    printed = last_server_log[0]
    assert not (user_home / ".gunicorn").exists() and not list(user_home.rglob("*.ctl"))
    lines = [line for line in printed.splitlines() if line.strip() and not line.startswith("serving recsys")]
    assert any(" gunicorn.error " in line for line in lines), printed
    plain = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [\w.]+ ")
    assert all(plain.match(line) for line in lines), [line for line in lines if not plain.match(line)]
