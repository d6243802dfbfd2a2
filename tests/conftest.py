import email.message
import fcntl
import io
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib
import pytest
import torch.hub

from tests import book_build

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root() -> Path:
    return ROOT


class _Response(io.BytesIO):
    """What ``urlopen`` returns, for the parts torch.hub reads: read(), info(), context."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = email.message.Message()
        self.headers["Content-Length"] = str(len(data))

    def info(self):
        return self.headers


@pytest.fixture
def web(monkeypatch):
    """A stand-in for the internet: ``web[url] = bytes`` serves them to urllib's and
    torch.hub's ``urlopen`` (HEAD and GET); any other URL fails as it does offline.
    ``web.requests`` lists the (method, url) pairs asked for."""

    class Web(dict):
        requests: list[tuple[str, str]]

    served = Web()
    served.requests = []

    def urlopen(request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        method = request.get_method() if isinstance(request, urllib.request.Request) else "GET"
        served.requests.append((method, url))
        if url not in served:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return _Response(b"" if method == "HEAD" else served[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    return served


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The book built once per test session, notebooks not executed, with ``-W``
    (any Sphinx warning fails); returns the folder of the HTML site."""
    jb = Path(sys.executable).parent / "jupyter-book"
    if not jb.exists():
        pytest.skip("jupyter-book is not installed (pip install -e '.[dev]')")
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _build_book(jb, tmp_path_factory.mktemp("book"))
    # pytest -n: the workers share the session's temporary folder; the first builds
    shared = tmp_path_factory.getbasetemp().parent
    with open(shared / "book.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        html = shared / "book" / "_build" / "html"
        if not (shared / "book.built").exists():
            _build_book(jb, shared / "book")
            (shared / "book.built").touch()
    return html


def _build_book(jb: Path, out: Path) -> Path:
    result = book_build.build(out, execute=False, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"
