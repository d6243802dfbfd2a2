import email.message
import io
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib
import pytest
import torch.hub

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
