"""Pascal VOC 2007 as it is served in 2026 (issue #43): tar and zip, checked by hash where one
is known and by content always, unpacked safely and atomically, every failure named.

The sources are real HTTP servers on 127.0.0.1 (a thread each test, bounded timeouts) that
serve a small VOCdevkit tree staged as the real one is laid out (tests/real_formats.py),
packed as Oxford's tar and as Ultralytics' zip. The id counts that the content check
requires are VOC 2007's by default (5011 / 4952); the tests set them to the staged tree's.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torchvision

from course.data import voc as voc_module
from course.data.download import DownloadError, Source, fetch, install, probe, safe_extract
from course.data.voc import (
    VOC2007_SOURCES,
    VOC2007_SPLIT_SIZES,
    VOC_CLASSES,
    VOCContentError,
    VOCDetection,
    download_voc,
    locate_voc2007,
    verify_voc2007,
)
from tests.real_formats import stage_voc2007

TAR, ZIP = "VOCtrainval_06-Nov-2007.tar", "VOCtrainval_06-Nov-2007.zip"
TRAIN, VAL, TEST = 6, 4, 5


def _tar(folder: Path, arcname: str = "VOCdevkit") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=arcname)
    return buffer.getvalue()


def _zip(folder: Path, prefix: str = "VOCdevkit") -> bytes:
    """Packed as a zip tool does: a directory entry for every folder, then the files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[str, bytes]:
    """The staged tree packed every way a test needs (built once)."""
    base = tmp_path_factory.mktemp("staged")
    stage_voc2007(base, num_train=TRAIN, num_val=VAL, num_test=TEST)
    devkit = base / "VOCdevkit"
    files = {"tar": _tar(devkit), "zip": _zip(devkit)}
    files["truncated"] = files["zip"][: len(files["zip"]) // 2]
    files["truncated-tar"] = files["tar"][: len(files["tar"]) // 2]
    gappy = tmp_path_factory.mktemp("gappy") / "VOCdevkit"
    shutil.copytree(devkit, gappy)
    for image_id in ("000007", "000011", "000013"):
        (gappy / "VOC2007" / "JPEGImages" / f"{image_id}.jpg").unlink()
    files["gappy"] = _zip(gappy)
    newer = tmp_path_factory.mktemp("voc2012") / "VOCdevkit"
    shutil.copytree(devkit / "VOC2007", newer / "VOC2012")
    files["voc2012"] = _tar(newer)
    return files


@pytest.fixture(autouse=True)
def small_splits(monkeypatch):
    """The staged tree's split sizes instead of VOC 2007's (the default stays strict)."""
    monkeypatch.setitem(VOC2007_SPLIT_SIZES, "trainval", TRAIN + VAL)
    monkeypatch.setitem(VOC2007_SPLIT_SIZES, "test", TEST)


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (the http.server API)
        kind = self.path.split("/")[1]
        self.send_response(404 if kind == "missing" else 200)
        self.send_header("Content-Type", "text/html" if kind == "html" else "application/zip")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        kind, name = self.path.split("/")[1], self.path.split("/")[-1]
        self.log.append((kind, self.headers.get("Range")))
        if kind == "missing":
            self.send_error(404)
            return
        if kind == "html":  # a login page, with status 200
            page = b"<!DOCTYPE html><html><body>Sign in to download</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        data = self.files["tar" if name.endswith(".tar") else "zip"]
        if kind in self.files:  # another packing served under the real name
            data = self.files[kind]
        if kind == "corrupt":
            data = data[:600] + bytes([data[600] ^ 0xFF]) + data[601:]
        start = 0
        ranged = self.headers.get("Range")
        if ranged and kind == "good":
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if kind in ("cut", "stall"):  # half of what it announced, then cut or silence
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.wfile.flush()
            if kind == "stall":
                time.sleep(3)
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture()
def server(packed, monkeypatch):
    """A local server; yields (url of a kind and a file name, the request log)."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    handler = type("Handler", (_Handler,), {"files": packed, "log": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    yield (lambda kind, name=ZIP: f"http://127.0.0.1:{port}/{kind}/{name}"), handler.log
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url(name: str = TAR) -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens there any more: connection refused
    return f"http://127.0.0.1:{port}/down/{name}"


def _clean(root: Path) -> None:
    """Nothing half-made: no extraction folder, no tree, no archive, no partial file
    (the only thing a failure may leave is a .partial of a cut transfer, checked apart)."""
    leftovers = sorted(p.name for p in root.iterdir()) if root.exists() else []
    assert leftovers in ([], ["VOCdevkit"]), leftovers
    if leftovers:
        assert list((root / "VOCdevkit").iterdir()) == []


def _loads(root: Path) -> None:
    assert len(VOCDetection(root, image_set="train")) == TRAIN
    assert len(VOCDetection(root, image_set="val")) == VAL
    image, target = VOCDetection(root, image_set="val")[0]
    assert image.shape[0] == 3 and len(target["boxes"]) >= 1


# --- the sources -------------------------------------------------------------------------


def test_the_sources_are_those_of_2026_with_torchvision_md5s():
    table = torchvision.datasets.voc.DATASET_YEAR_DICT
    for image_set, key in (("trainval", "2007"), ("test", "2007-test")):
        sources = VOC2007_SOURCES[image_set]
        first = sources[0]
        assert (first.url, first.md5) == (table[key]["url"], table[key]["md5"])  # thor
        assert {s.packing for s in sources} == {".tar", ".zip"}
        assert all(s.note for s in sources)  # where it was found, and when
        assert not any("pjreddie" in s.url or "host.robots" in s.url for s in sources)
        for source in sources:
            assert source.md5 is None or source.packing == ".tar"
    assert VOC2007_SPLIT_SIZES is voc_module.VOC2007_SPLIT_SIZES


def test_the_default_split_sizes_are_voc2007s(tmp_path, monkeypatch):
    monkeypatch.undo()  # the module's own numbers
    assert VOC2007_SPLIT_SIZES == {"trainval": 5011, "test": 4952}
    stage_voc2007(tmp_path, num_train=TRAIN, num_val=VAL)
    with pytest.raises(VOCContentError, match="lists 10 ids, not VOC 2007's 5011"):
        verify_voc2007(tmp_path / "VOCdevkit" / "VOC2007")


# --- both packings lead to a working data set ---------------------------------------------


@pytest.mark.parametrize("name", [TAR, ZIP])
def test_a_tar_or_a_zip_from_a_server_gives_a_loadable_voc(name, server, packed, tmp_path):
    url, log = server
    md5 = hashlib.md5(packed["tar"]).hexdigest() if name == TAR else None
    root = download_voc(tmp_path, sources=[Source(url("good", name), md5=md5)], progress=False)
    _loads(root)
    assert sorted(p.name for p in root.iterdir()) == ["VOCdevkit"]  # archive deleted
    assert download_voc(tmp_path, sources=[Source(url("missing"))]) == root  # nothing to do
    assert len(log) == 1


def test_the_test_split_joins_trainval_in_the_same_tree(server, packed, tmp_path, monkeypatch):
    url, _ = server
    download_voc(tmp_path, sources=[Source(url("good", ZIP))], progress=False)
    # the test archive: the same tree, whose test.txt must list TEST ids
    download_voc(tmp_path, "test", sources=[Source(url("good", ZIP))], progress=False)
    assert len(VOCDetection(tmp_path, image_set="test")) == TEST
    _loads(tmp_path)


def test_a_dead_host_a_404_an_html_page_and_a_bad_md5_fall_through_to_the_zip(
    server, packed, tmp_path
):
    url, log = server
    sources = [
        Source(_closed_port_url(), md5="0" * 32),
        Source(url("missing", TAR), md5=hashlib.md5(packed["tar"]).hexdigest()),
        Source(url("html", ZIP)),
        Source(url("corrupt", TAR), md5=hashlib.md5(packed["tar"]).hexdigest()),
        Source(url("good", ZIP)),
    ]
    download_voc(tmp_path, sources=sources, progress=False)
    _loads(tmp_path)
    assert [kind for kind, _ in log] == ["missing", "html", "corrupt", "good"]


# --- each failure: the right outcome, nothing half-made -----------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("missing", ZIP, "HTTP 404"),
        ("html", ZIP, "HTML page"),
        ("truncated", ZIP, "truncated or corrupt"),
        ("truncated-tar", TAR, "truncated or corrupt"),
        ("voc2012", TAR, "holds VOC2012, not VOC2007"),
        ("gappy", ZIP, "3 of the 10 ids of trainval lack their JPEG or xml; first: 000007"),
        ("corrupt", TAR, "MD5"),
    ],
)
def test_a_bad_source_is_named_and_leaves_nothing(kind, name, expected, server, packed, tmp_path):
    url, _ = server
    md5 = hashlib.md5(packed["tar"]).hexdigest() if kind == "corrupt" else None
    with pytest.raises(DownloadError) as caught:
        download_voc(tmp_path, sources=[Source(url(kind, name), md5=md5)], progress=False)
    assert expected in str(caught.value)
    assert url(kind, name) in str(caught.value)
    _clean(tmp_path)


def test_a_host_that_stalls_is_left_within_the_timeout_and_resumed_later(server, packed, tmp_path):
    url, log = server
    began = time.monotonic()
    with pytest.raises(DownloadError, match="stalled"):
        download_voc(tmp_path, sources=[Source(url("stall"))], timeout=0.5, progress=False)
    assert time.monotonic() - began < 2.5  # the server stays silent for 3 s
    partial = tmp_path / f"{ZIP}.partial"
    kept = partial.stat().st_size
    assert 0 < kept < len(packed["zip"]) and not (tmp_path / "VOCdevkit").exists()
    download_voc(tmp_path, sources=[Source(url("good"))], progress=False)
    assert log[-1] == ("good", f"bytes={kept}-")  # asked only for the rest
    _loads(tmp_path)


def test_a_server_that_ignores_range_restarts_cleanly(server, packed, tmp_path):
    url, log = server
    sources = [Source(url("cut")), Source(url("norange"))]
    download_voc(tmp_path, sources=sources, progress=False)
    assert log[1][0] == "norange" and log[1][1] is not None
    _loads(tmp_path)


def test_when_everything_fails_one_message_names_each_source_and_the_manual_step(server, tmp_path):
    url, _ = server
    sources = [
        Source(_closed_port_url(), md5="0" * 32),
        Source(url("missing")),
        Source(url("html")),
    ]
    with pytest.raises(DownloadError) as caught:
        download_voc(tmp_path, sources=sources, progress=False)
    message = str(caught.value)
    for source, why in zip(sources, ("no answer", "HTTP 404", "HTML page"), strict=True):
        line = next(line for line in message.splitlines() if source.url + ":" in line)
        assert why in line, line
    assert f"put it, under its own name, in {tmp_path}" in message
    assert "COURSE_DATA" in message and "archive=" in message and "make_synthetic_voc" in message
    _clean(tmp_path)


def test_a_file_copied_by_hand_is_used_without_a_request(server, packed, tmp_path, monkeypatch):
    url, log = server
    (tmp_path / ZIP).write_bytes(packed["zip"])
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    root = download_voc(sources=[Source(url("good", TAR)), Source(url("good", ZIP))])
    assert root == tmp_path.resolve() and log == []
    _loads(root)


def test_a_known_tar_copied_by_hand_is_hash_checked_first(server, packed, tmp_path):
    url, _ = server
    data = packed["tar"]
    (tmp_path / TAR).write_bytes(data[:3000] + bytes([data[3000] ^ 1]) + data[3001:])  # one bit
    sources = [Source(url("missing", TAR), md5=hashlib.md5(packed["tar"]).hexdigest())]
    with pytest.raises(DownloadError, match=f"{TAR} \\(on disk\\): its MD5 is .*delete it"):
        download_voc(tmp_path, sources=sources, progress=False)
    assert not (tmp_path / "VOCdevkit").exists()


def test_an_archive_given_by_path_is_checked_by_content(packed, tmp_path):
    copy = tmp_path / "input" / "voc2007-trainval.zip"  # any name: a Kaggle data set
    copy.parent.mkdir()
    copy.write_bytes(packed["zip"])
    download_voc(tmp_path / "data", archive=copy)
    _loads(tmp_path / "data")
    copy.write_bytes(packed["gappy"])
    with pytest.raises(DownloadError, match="is not a usable VOC 2007 trainval: 3 of the 10"):
        download_voc(tmp_path / "other", archive=copy)
    assert not (tmp_path / "other" / "VOCdevkit" / "VOC2007").exists()
    with pytest.raises(ValueError, match="image_set"):
        download_voc(tmp_path, image_set="train")


# --- extraction ---------------------------------------------------------------------------


def test_an_interrupted_extraction_leaves_nothing_a_later_run_takes_for_complete(
    packed, tmp_path, monkeypatch
):
    archive = tmp_path / ZIP
    archive.write_bytes(packed["zip"])

    def fail(tree):
        raise KeyboardInterrupt  # the student stops the cell during the check

    with pytest.raises(KeyboardInterrupt):
        install(archive, tmp_path / "data" / "VOCdevkit" / "VOC2007", locate_voc2007, fail)
    assert sorted(p.name for p in (tmp_path / "data" / "VOCdevkit").iterdir()) == []
    download_voc(tmp_path / "data", archive=archive)
    _loads(tmp_path / "data")


def _evil(kind: str) -> Path:
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("../evil.txt", b"evil")
    else:
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("VOCdevkit/link" if kind == "link" else "/tmp/evil.txt")
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
            else:
                info.size = 4
            tar.addfile(info, io.BytesIO(b"evil") if kind != "link" else None)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar", "link"])
def test_extraction_refuses_a_member_that_leaves_the_folder(kind, tmp_path):
    archive = tmp_path / "bad"
    archive.write_bytes(_evil(kind))
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match="refusing"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "out").iterdir()) == []


def test_a_symlink_in_a_zip_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        info = zipfile.ZipInfo("VOCdevkit/link")
        info.external_attr = 0o120777 << 16  # a symbolic link, as `zip -y` stores it
        z.writestr(info, "/etc/passwd")
    (tmp_path / "bad.zip").write_bytes(buffer.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match="refusing the link"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "out")


def test_fetch_and_probe_name_what_a_server_did(server, packed, tmp_path):
    url, _ = server
    assert fetch(Source(url("good")), tmp_path, progress=False).read_bytes() == packed["zip"]
    assert probe(url("good")) is None
    assert probe(url("missing")) == "HTTP 404"
    assert "HTML" in probe(url("html"))
    assert probe(_closed_port_url(), timeout=1).startswith("no answer")


# --- the content check, file by file --------------------------------------------------------


@pytest.fixture()
def tree(tmp_path) -> Path:
    return stage_voc2007(tmp_path, num_train=TRAIN, num_val=VAL, num_test=TEST)


def _edit_xml(tree: Path, image_id: str, old: str, new: str) -> None:
    xml = tree / "Annotations" / f"{image_id}.xml"
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))


def test_the_content_check_accepts_the_devkit_layout(tree):
    assert verify_voc2007(tree) == TRAIN + VAL
    assert verify_voc2007(tree, "test") == TEST


def test_a_box_outside_its_image_is_named(tree):
    width = (tree / "Annotations" / "000009.xml").read_text().split("<width>")[1].split("<")[0]
    _edit_xml(tree, "000009", "</xmax>", "0</xmax>")  # xmax x 10: past the right edge
    with pytest.raises(VOCContentError, match=f"000009.xml: the box .* inside its {width} x"):
        verify_voc2007(tree)


def test_an_xml_that_does_not_parse_or_names_another_class_is_named(tree):
    _edit_xml(tree, "000011", "</annotation>", "")  # cut short
    with pytest.raises(VOCContentError, match="000011.xml: not a valid VOC annotation"):
        verify_voc2007(tree)
    (tree / "Annotations" / "000011.xml").write_text(
        (tree / "Annotations" / "000013.xml").read_text()
    )
    xml = (tree / "Annotations" / "000013.xml").read_text()
    name = xml.split("<object>")[1].split("<name>")[1].split("<")[0]  # not the owner's name
    _edit_xml(tree, "000013", f"<name>{name}</name>", "<name>hornet</name>")
    with pytest.raises(VOCContentError, match="000013.xml: unknown class 'hornet'"):
        verify_voc2007(tree)


def test_a_full_split_must_hold_all_twenty_classes(tmp_path, monkeypatch):
    """500 ids or more (VOC 2007's splits): every class must occur. 500 copies of one
    staged image whose objects are all dogs hold one class."""
    folder = stage_voc2007(tmp_path, num_train=1, num_val=1)
    xml = (folder / "Annotations" / "000005.xml").read_text()
    for name in VOC_CLASSES:
        xml = xml.replace(f"<name>{name}</name>", "<name>dog</name>")
    jpeg = (folder / "JPEGImages" / "000005.jpg").read_bytes()
    ids = [f"{k:06d}" for k in range(1000, 1500)]
    for image_id in ids:
        (folder / "Annotations" / f"{image_id}.xml").write_text(xml)
        (folder / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
    (folder / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    monkeypatch.setitem(VOC2007_SPLIT_SIZES, "trainval", 500)
    with pytest.raises(VOCContentError, match="no object of the classes \\['aeroplane'"):
        verify_voc2007(folder)
