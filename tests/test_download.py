"""Pascal VOC's download: several sources, the MD5 check, resuming, extraction (issue #31).

The sources are real HTTP servers on 127.0.0.1 that serve a VOCdevkit tar staged as the
real one is laid out: one sends it intact (and honours Range), one sends it with a byte
changed, one cuts the transfer halfway, one ignores Range, one answers 404, and one port
has no server at all.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torchvision

from course.data import download as download_module
from course.data.download import Archive, DownloadError, extract_tar, fetch, md5_of
from course.data.voc import VOC2007_ARCHIVES, VOCDetection, download_voc, make_synthetic_voc

NAME = "VOCtrainval_06-Nov-2007.tar"


@pytest.fixture(scope="module")
def voc_tar(tmp_path_factory) -> bytes:
    """A small VOCdevkit tree tarred as the real archive is: members VOCdevkit/VOC2007/..."""
    folder = tmp_path_factory.mktemp("staged")
    make_synthetic_voc(folder, num_train=6, num_val=4, size=64, progress=False)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder / "VOCdevkit", arcname="VOCdevkit")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    data: bytes = b""
    log: list = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        kind = self.path.split("/")[1]
        self.log.append((kind, self.headers.get("Range")))
        data = self.data
        if kind == "missing":
            self.send_error(404)
            return
        if kind == "corrupt":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = 0
        ranged = self.headers.get("Range")
        if ranged and kind == "good":
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if kind == "cut":  # half of what it announced, then the connection closes
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture()
def server(voc_tar, monkeypatch):
    """A local server; yields (url of a kind, the request log)."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    handler = type("Handler", (_Handler,), {"data": voc_tar, "log": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    yield (lambda kind: f"http://127.0.0.1:{port}/{kind}/{NAME}"), handler.log
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens there any more: connection refused
    return f"http://127.0.0.1:{port}/down/{NAME}"


def _archive(voc_tar: bytes, *urls: str) -> Archive:
    return Archive(NAME, hashlib.md5(voc_tar).hexdigest(), tuple(urls), size_mb=1)


def test_the_archives_are_the_files_torchvision_records():
    """Same file names and MD5s as torchvision's table (the real reference)."""
    table = torchvision.datasets.voc.DATASET_YEAR_DICT
    for image_set, key in (("trainval", "2007"), ("test", "2007-test")):
        ours = VOC2007_ARCHIVES[image_set]
        assert (ours.filename, ours.md5) == (table[key]["filename"], table[key]["md5"])
        assert table[key]["url"] in ours.urls
        assert all(url.endswith("/" + ours.filename) for url in ours.urls)


def test_a_source_that_is_down_or_missing_is_skipped(server, voc_tar, tmp_path):
    url, log = server
    archive = _archive(voc_tar, _closed_port_url(), url("missing"), url("good"))
    path = fetch(archive, tmp_path, progress=False)
    assert path == tmp_path / NAME and path.read_bytes() == voc_tar
    assert [kind for kind, _ in log] == ["missing", "good"]
    assert not (tmp_path / f"{NAME}.partial").exists()


def test_a_corrupt_file_is_deleted_and_the_next_source_tried(server, voc_tar, tmp_path):
    url, log = server
    path = fetch(_archive(voc_tar, url("corrupt"), url("good")), tmp_path, progress=False)
    assert md5_of(path) == hashlib.md5(voc_tar).hexdigest()
    assert log == [("corrupt", None), ("good", None)]  # started over, no resume of bad bytes


def test_a_cut_download_resumes_from_where_it_stopped(server, voc_tar, tmp_path):
    url, log = server
    with pytest.raises(DownloadError):
        fetch(_archive(voc_tar, url("cut")), tmp_path, progress=False)
    partial = tmp_path / f"{NAME}.partial"
    kept = partial.stat().st_size
    assert 0 < kept < len(voc_tar) and not (tmp_path / NAME).exists()
    path = fetch(_archive(voc_tar, url("good")), tmp_path, progress=False)
    assert path.read_bytes() == voc_tar
    assert log[-1] == ("good", f"bytes={kept}-")  # asked only for the rest


def test_a_server_that_ignores_range_restarts_cleanly(server, voc_tar, tmp_path):
    url, log = server
    path = fetch(_archive(voc_tar, url("cut"), url("norange")), tmp_path, progress=False)
    assert path.read_bytes() == voc_tar  # not the kept half followed by the whole file
    assert log[1][0] == "norange" and log[1][1] is not None


def test_when_every_source_fails_the_error_names_each_and_the_routes_left(
    server, voc_tar, tmp_path
):
    url, _ = server
    down = _closed_port_url()
    archive = _archive(voc_tar, down, url("missing"), url("corrupt"))
    with pytest.raises(DownloadError) as caught:
        fetch(archive, tmp_path, progress=False, routes=("attach it on Kaggle",))
    message = str(caught.value)
    for source in (down, url("missing"), url("corrupt")):
        assert source in message
    assert "404" in message and "MD5" in message and "attach it on Kaggle" in message
    assert str(tmp_path / NAME) in message  # where to copy it by hand


def test_a_file_copied_by_hand_is_checked_and_used_without_a_request(server, voc_tar, tmp_path):
    url, log = server
    (tmp_path / NAME).write_bytes(voc_tar)
    assert fetch(_archive(voc_tar, url("good")), tmp_path, progress=False) == tmp_path / NAME
    assert log == []
    (tmp_path / NAME).write_bytes(voc_tar[:-10])
    with pytest.raises(DownloadError, match="Delete it"):
        fetch(_archive(voc_tar, url("good")), tmp_path, progress=False)


def test_download_voc_puts_a_loadable_voc_where_chapter_7_looks(
    server, voc_tar, tmp_path, monkeypatch
):
    url, _ = server
    monkeypatch.setitem(
        VOC2007_ARCHIVES, "trainval", _archive(voc_tar, _closed_port_url(), url("good"))
    )
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    root = download_voc(progress=False)
    assert root == tmp_path.resolve()
    assert len(VOCDetection(root, image_set="train")) == 6
    assert len(VOCDetection(root, image_set="val")) == 4
    assert not (root / NAME).exists()  # the tar is deleted once unpacked
    assert download_voc(progress=False) == root  # already there: nothing to do


def test_download_voc_routes_when_all_fail_name_kaggle_and_the_stand_in(
    voc_tar, tmp_path, monkeypatch
):
    monkeypatch.setitem(VOC2007_ARCHIVES, "trainval", _archive(voc_tar, _closed_port_url()))
    with pytest.raises(DownloadError) as caught:
        download_voc(tmp_path, progress=False)
    message = str(caught.value)
    assert "Kaggle" in message and "archive=" in message and "make_synthetic_voc" in message


def test_download_voc_takes_a_local_copy_of_the_tar(voc_tar, tmp_path, monkeypatch):
    monkeypatch.setitem(VOC2007_ARCHIVES, "trainval", _archive(voc_tar))
    copy = tmp_path / "input" / NAME
    copy.parent.mkdir()
    copy.write_bytes(voc_tar)
    download_voc(tmp_path / "data", archive=copy, progress=False)
    assert len(VOCDetection(tmp_path / "data", image_set="train")) == 6
    copy.write_bytes(voc_tar[:-1] + b"x")
    with pytest.raises(DownloadError, match="MD5"):
        download_voc(tmp_path / "other", archive=copy)
    with pytest.raises(ValueError, match="image_set"):
        download_voc(tmp_path, image_set="train")


def test_extraction_moves_the_split_lists_in_last(voc_tar, tmp_path, monkeypatch):
    tar = tmp_path / NAME
    tar.write_bytes(voc_tar)
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(
        download_module.os, "replace", lambda a, b: (moved.append(str(b)), real_replace(a, b))
    )
    extract_tar(tar, tmp_path / "out", last="ImageSets/")
    splits = [i for i, path in enumerate(moved) if "ImageSets" in path]
    assert splits and min(splits) == len(moved) - len(splits)  # after every image and xml
    assert any(path.endswith(".jpg") for path in moved)


def test_extraction_refuses_a_member_that_leaves_the_folder(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "bad.tar").write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match="evil"):
        extract_tar(tmp_path / "bad.tar", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
