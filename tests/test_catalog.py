"""Ingest: folders and CSVs, local files and URLs, bad files reported and skipped, no duplicates."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from recsys import store
from recsys.catalog import BadImage, ingest, prepare_image, read_catalog
from recsys.errors import RecsysError
from tests.conftest import BUNDLED, one_line_error, run_cli, settings_for


def _count(ws, model=store.Item) -> int:
    with ws.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def _plant_bad_files(folder: Path) -> dict[str, str]:
    """Bad files a real catalogue contains; returns key -> expected reason fragment."""
    (folder / "bad").mkdir(parents=True)
    good = (BUNDLED / "rose").glob("*.jpg").__next__().read_bytes()
    (folder / "bad" / "empty.jpg").write_bytes(b"")
    (folder / "bad" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "bad" / "text.jpg").write_bytes(b"this is not a picture\n" * 20)
    corrupt = bytearray(good)
    corrupt[200:1200] = b"\x00" * 1000
    (folder / "bad" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(corrupt[:400]))
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")  # tiny file, 144 Mpx
    (folder / "bad" / "bomb.png").write_bytes(bomb.getvalue())
    return {
        "bad/empty": "empty",
        "bad/truncated": "truncated",
        "bad/text": "not an image",
        "bad/corrupt": "",
        "bad/bomb": "decompression bomb",
    }


def test_folder_ingest_labels_resizes_and_is_idempotent(workspace):
    report = ingest(workspace, BUNDLED, progress=False)
    assert report.added == 200 and not report.failed
    with workspace.session() as s:
        rows = s.execute(select(store.Item.label, func.count()).group_by(store.Item.label))
        labels = {label: n for label, n in rows}
        item = s.scalars(select(store.Item).where(store.Item.key.like("tulip/%"))).first()
    assert labels == {lab: 40 for lab in ("daisy", "dandelion", "rose", "sunflower", "tulip")}
    stored = Image.open(workspace.image_file(item.image_path))
    assert stored.format == "JPEG" and max(stored.size) <= 256
    again = ingest(workspace, BUNDLED, progress=False)
    assert again.added == 0 and again.already_present == 200
    assert _count(workspace) == 200


def test_max_side_shrinks_images(tmp_path):
    from recsys.workspace import Workspace

    with Workspace(settings_for(tmp_path / "h", max_side=64)) as ws:
        ingest(ws, BUNDLED / "daisy", progress=False)
        with ws.session() as s:
            rel = s.scalar(select(store.Item.image_path).limit(1))
        assert max(Image.open(ws.image_file(rel)).size) == 64


def test_bad_files_are_reported_and_skipped(workspace, tmp_path):
    catalog = tmp_path / "cat"
    shutil.copytree(BUNDLED / "tulip", catalog / "tulip")
    expected = _plant_bad_files(catalog)
    report = ingest(workspace, catalog, progress=False)
    assert report.added == 40
    failed = dict(report.failed)
    assert set(failed) == set(expected)
    for key, fragment in expected.items():
        assert fragment in failed[key], (key, failed[key])
    assert _count(workspace) == 40


def test_cli_ingest_reports_each_bad_file_and_exits_zero(tmp_path):
    catalog = tmp_path / "cat"
    shutil.copytree(BUNDLED / "rose", catalog / "rose")
    expected = _plant_bad_files(catalog)
    proc = run_cli("ingest", str(catalog), "--quiet", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    skipped = [ln for ln in proc.stderr.splitlines() if ln.startswith("skipped ")]
    assert sorted(ln.split(":")[0].removeprefix("skipped ") for ln in skipped) == sorted(expected)
    assert "ingested 40 new item(s), 0 already present, 5 skipped" in proc.stdout


def test_cli_ingest_of_only_bad_files_fails(tmp_path):
    catalog = tmp_path / "cat"
    catalog.mkdir()
    _plant_bad_files(catalog)
    proc = run_cli("ingest", str(catalog), "--quiet", home=tmp_path / "h")
    assert "nothing could be ingested" in one_line_error(proc)


def test_cli_ingest_missing_path_and_bad_csv_give_one_line_errors(tmp_path):
    proc = run_cli("ingest", str(tmp_path / "nope"), home=tmp_path / "h")
    assert "nope" in one_line_error(proc)
    csv = tmp_path / "items.csv"
    csv.write_text("id,path\n1,a.jpg\n")
    line = one_line_error(run_cli("ingest", str(csv), home=tmp_path / "h"))
    assert "items.csv" in line and "key" in line and "image" in line


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 - http.server API
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path.startswith("/flaky/") and _Handler.hits[self.path] == 1:
            self.send_error(503)
            return
        if self.path.startswith("/flaky/"):
            self.path = self.path.removeprefix("/flaky")
        if self.path.startswith("/broken"):
            self.send_error(500)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server():
    handler = functools.partial(_Handler, directory=str(BUNDLED))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_csv_with_urls_and_paths(workspace, tmp_path, image_server):
    sunflowers = sorted((BUNDLED / "sunflower").glob("*.jpg"))[:6]
    rows = ["key,image,label,title,photographer"]
    for n, f in enumerate(sunflowers[:3]):
        rows.append(f"url-{n},{image_server}/sunflower/{f.name},sunflower,Sunflower {n},someone")
    rows.append(f"flaky,{image_server}/flaky/sunflower/{sunflowers[3].name},sunflower,,")
    rows.append(f"local,{sunflowers[4]},sunflower,Local one,")
    rows.append(f"missing,{image_server}/sunflower/nope.jpg,sunflower,,")
    rows.append(f"broken,{image_server}/broken.jpg,sunflower,,")
    rows.append(",no-key.jpg,,,")
    rows.append("local,again.jpg,,,")
    csv = tmp_path / "catalog.csv"
    csv.write_text("\n".join(rows) + "\n")
    workspace.settings = workspace.settings.replace(retries=2, timeout=5)
    report = ingest(workspace, csv, progress=False)
    failed = dict(report.failed)
    assert report.added == 5
    assert "HTTP 404" in failed["missing"]
    assert "HTTP 500" in failed["broken"] and "3 attempt" in failed["broken"]
    assert failed["catalog.csv:9"] == "empty key"
    assert "duplicate key" in failed["local"]
    with workspace.session() as s:
        item = s.scalars(select(store.Item).where(store.Item.key == "url-1")).one()
    assert item.title == "Sunflower 1" and item.meta == {"photographer": "someone"}
    assert item.source.startswith("http://127.0.0.1")


def test_prepare_image_handles_modes_and_orientation():
    rgba = Image.new("RGBA", (300, 100), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    out = Image.open(io.BytesIO(prepare_image(buf.getvalue(), max_side=150)))
    assert out.mode == "RGB" and out.size == (150, 50)
    assert out.getpixel((10, 10)) == (255, 255, 255)  # transparent -> white, not black
    with pytest.raises(BadImage, match="empty"):
        prepare_image(b"", 256)


def test_read_catalog_rejects_unreadable_csv(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RecsysError, match="x.csv"):
        read_catalog(csv)
