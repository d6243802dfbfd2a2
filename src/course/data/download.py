"""Downloading a data set archive that several hosts carry: try each, check the MD5, resume.

Pascal VOC's official host is often down and its best-known mirror is gone (see
pytorch/vision #9271 and #9335, tensorflow/datasets #11044), so an archive lists
several sources that serve the *same file*. :func:`fetch` tries them in order:

- the bytes go to ``<name>.partial`` beside the target; a broken download keeps
  them, and the next attempt (the next source, or the same cell run again) asks
  for the rest with an HTTP ``Range`` request, or starts over when the server
  ignores it;
- the finished file must have the MD5 that torchvision records for it; a file
  that does not is deleted and the next source is tried;
- only a checked file is renamed to its final name (``os.replace``), so a file
  with that name is always complete. One already there (copied by hand) is
  checked and used without any download.

When every source fails, :class:`DownloadError` says why each one did and what is
left to do (copy the archive by hand, or attach it as a Kaggle data set).

:func:`extract_tar` unpacks an archive with the safety checks of Python's "data"
filter (no absolute paths, no ``..``, no links out of the folder) and moves the
split lists in last, so that an interrupted extraction is never taken for a
complete data set.

Called by :func:`course.data.voc.download_voc` (chapter 7).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One file, its checksum, and the URLs that serve it, tried in order.

    Attributes:
        filename: the file's name on disk (the same at every source).
        md5: its MD5 as 32 hex digits.
        urls: the sources, best first.
        size_mb: its size, for messages.
    """

    filename: str
    md5: str
    urls: tuple[str, ...]
    size_mb: int = 0


class DownloadError(RuntimeError):
    """No source delivered the archive; the message says what each one did and what to do."""


def md5_of(path: str | os.PathLike) -> str:
    """The MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, partial: Path, timeout: float, progress: bool) -> None:
    """Append ``url``'s bytes to ``partial``, resuming from its size when the server allows."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "course-book"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:  # the server sends the whole file: start over
            have = 0
        remaining = response.headers.get("Content-Length")
        total = have + int(remaining) if remaining is not None else None
        with (
            open(partial, "ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=partial.name.removesuffix(".partial"),
                disable=not progress,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and partial.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - partial.stat().st_size)


def fetch(
    archive: Archive,
    folder: str | os.PathLike,
    *,
    timeout: float = 30.0,
    progress: bool = True,
    routes: Sequence[str] = (),
) -> Path:
    """``folder/archive.filename``, downloaded from the first source that delivers it intact.

    Args:
        archive: what to download, and from where.
        folder: where it goes (created if needed).
        timeout: seconds to wait for a server to answer or to send the next bytes.
        progress: show a progress bar.
        routes: what else the user can do, added to the error when every source fails.

    Returns:
        The path of the checked file.

    Raises:
        DownloadError: no source delivered a file with the expected MD5. The partial
            file is kept when a transfer was cut (a later call resumes it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / archive.filename
    if target.is_file():
        digest = md5_of(target)
        if digest == archive.md5:
            return target
        raise DownloadError(
            f"{target} is there but its MD5 is {digest}, not {archive.md5}: the "
            "file is corrupt or another version. Delete it and run again."
        )
    partial = folder / f"{archive.filename}.partial"
    failures = []
    for url in archive.urls:
        try:
            _download(url, partial, timeout, progress)
        except (OSError, ValueError, http.client.HTTPException) as error:
            # URLError, HTTPError and timeouts are OSErrors; a cut transfer is an
            # IncompleteRead. The partial file stays for the next source to resume.
            failures.append(f"{url}: {type(error).__name__}: {error}")
            continue
        digest = md5_of(partial)
        if digest == archive.md5:
            os.replace(partial, target)
            return target
        partial.unlink()
        failures.append(f"{url}: the file's MD5 is {digest}, not {archive.md5} (deleted)")
    lines = "\n".join(f"  - {line}" for line in failures)
    todo = "\n".join(f"  - {line}" for line in routes)
    raise DownloadError(
        f"No source delivered {archive.filename} ({archive.size_mb} MB, MD5 {archive.md5}):\n"
        f"{lines}\nWhat you can do:\n"
        f"  - run this again later: it resumes from {partial.name} when part of it came\n"
        f"  - download it on another machine and copy it to {target}; the next call checks "
        "it and uses it without downloading\n"
        f"{todo}"
    )


def _safe_members(tar: tarfile.TarFile, folder: Path) -> list[tarfile.TarInfo]:
    """The archive's regular files and folders; raise on a path that leaves ``folder``."""
    members = []
    for member in tar.getmembers():
        path = (folder / member.name).resolve()
        if not path.is_relative_to(folder.resolve()) or member.issym() or member.islnk():
            raise DownloadError(f"{tar.name}: refusing the member {member.name!r}")
        if member.isfile() or member.isdir():
            members.append(member)
    return members


def extract_tar(archive: str | os.PathLike, folder: str | os.PathLike, last: str = "") -> Path:
    """Unpack ``archive`` into ``folder``, merging with what is there; files whose path
    contains ``last`` are moved in after all others (the split lists of a data set).

    The archive goes to a temporary folder beside ``folder`` first; each file is then
    moved into place with ``os.replace``. Returns ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=folder) as tmp:
        staging = Path(tmp)
        with tarfile.open(archive) as tar:
            members = _safe_members(tar, staging)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; the members were checked above
                tar.extractall(staging, members=members)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        files.sort(key=lambda p: bool(last) and last in p.relative_to(staging).as_posix())
        for source in files:
            destination = folder / source.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
    return folder
