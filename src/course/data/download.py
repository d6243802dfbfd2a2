"""Downloading a data set that several hosts serve, in several packings, and installing it
only once it is complete.

Pascal VOC 2007 is the case in point (chapter 7): its official host moved, its best-known
mirror is gone, and what still serves it in 2026 is partly the original tar files (with
torchvision's MD5s) and partly zip repackings with no published checksum. So a data set
lists :class:`Source` objects, each a URL with its packing and, where one is published, its
MD5, and the caller tries them in order:

- :func:`fetch` writes the bytes to ``<name>.partial`` beside the target; a cut transfer
  keeps them, and the next attempt (the same cell run again) asks for the rest with an
  HTTP ``Range`` request, or starts over when the server ignores it. A socket that stops
  sending for ``timeout`` seconds ends the attempt. An HTML page (a login or error page
  served with status 200) or a file that is neither a tar nor a zip is refused at once.
  A file whose MD5 is known and differs is deleted. Only then is the file renamed to its
  final name (``os.replace``).
- :func:`install` unpacks it into a fresh folder *beside* the destination
  (:func:`safe_extract`: tar or zip, no absolute path, no ``..``, no link), lets the
  caller verify the tree by its content, and only then renames the tree into place (or,
  when the destination already holds another split, moves the files in with the split
  lists last). A cut-short extraction or a tree that fails the check leaves nothing that
  a later run could take for a complete data set.

When every source fails, the caller raises one :class:`DownloadError` that lists each
source and why it failed (see :func:`course.data.voc.download_voc`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

CHUNK = 1 << 20
#: Archive packings that :func:`safe_extract` reads, by the suffix of their file name.
PACKINGS = (".tar", ".zip")


@dataclass(frozen=True)
class Source:
    """One URL that serves a data set's archive.

    Attributes:
        url: where to download it from; its last path component is the file name.
        md5: the file's MD5 (32 hex digits) where one is published, else ``None``: the
            file is then accepted on its content alone (the caller's check).
        size_mb: its size in MB, for messages (0: unknown).
        note: where and when this source was found (for the reader of the list).
    """

    url: str
    md5: str | None = None
    size_mb: int = 0
    note: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def packing(self) -> str:
        """``".tar"`` or ``".zip"``, from the file name."""
        suffix = Path(self.filename).suffix
        if suffix not in PACKINGS:
            raise ValueError(f"{self.url}: not a {' or '.join(PACKINGS)} file")
        return suffix


class DownloadError(RuntimeError):
    """A source, or every source, did not deliver a usable archive; the message says why
    and what to do."""


def md5_of(path: str | os.PathLike) -> str:
    """The MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packing_of(path: str | os.PathLike) -> str | None:
    """``".tar"`` or ``".zip"`` from the file's first bytes (not its name), ``"html"`` for a
    web page, ``None`` for anything else."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return ".zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ".tar"
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "html"
    return None


def _download(url: str, partial: Path, timeout: float, progress: bool) -> None:
    """Append ``url``'s bytes to ``partial``, resuming from its size when the server allows."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "course-book"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if "text/html" in (response.headers.get("Content-Type") or ""):
            raise DownloadError("served an HTML page (an error or login page), not an archive")
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
            # read1: what has arrived (up to CHUNK), so that a stall keeps the bytes before it
            read = getattr(response, "read1", response.read)
            for chunk in iter(lambda: read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and partial.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - partial.stat().st_size)


def fetch(
    source: Source, folder: str | os.PathLike, *, timeout: float = 30.0, progress: bool = True
) -> Path:
    """``folder/source.filename``, downloaded from ``source`` (resuming a ``.partial`` file).

    Args:
        source: what to download.
        folder: where it goes (created if needed).
        timeout: seconds to wait for the server to answer or to send the next bytes.
        progress: show a progress bar.

    Returns:
        The path of the file: a tar or a zip, with the published MD5 where there is one.

    Raises:
        DownloadError: the transfer failed (the message says how), the server sent a
            web page or something that is not an archive (deleted), or the MD5 differs
            (deleted). A cut transfer keeps its ``.partial`` file for the next call.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.filename
    partial = folder / f"{source.filename}.partial"
    try:
        _download(source.url, partial, timeout, progress)
    except DownloadError:
        partial.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as error:
        raise DownloadError(f"HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"no answer ({error.reason})") from error
    except TimeoutError as error:
        raise DownloadError(
            f"stalled: nothing received for {timeout:g} s (kept what came)"
        ) from error
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(
            f"transfer cut ({type(error).__name__}: {error}); kept what came, a later call resumes"
        ) from error
    packing = packing_of(partial)
    if packing != source.packing:
        partial.unlink()
        what = (
            "an HTML page (an error or login page)"
            if packing == "html"
            else (f"a {packing} file" if packing else "not a tar or zip archive")
        )
        raise DownloadError(f"served {what}, not the {source.packing} expected (deleted)")
    if source.md5 is not None:
        digest = md5_of(partial)
        if digest != source.md5:
            partial.unlink()
            raise DownloadError(f"the file's MD5 is {digest}, not {source.md5} (deleted)")
    os.replace(partial, target)
    return target


def probe(url: str, timeout: float = 5.0) -> str | None:
    """``None`` when ``url`` answers an HTTP HEAD request within ``timeout`` seconds with
    a success (redirects followed), else why not, in a few words."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "course-book"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if "text/html" in (response.headers.get("Content-Type") or ""):
                return "answers with an HTML page, not a file"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except urllib.error.URLError as error:
        return f"no answer ({error.reason})"
    except (OSError, http.client.HTTPException) as error:
        return f"no answer ({type(error).__name__}: {error})"
    return None


def _validate_name(name: str, staging: Path, archive: Path) -> None:
    path = (staging / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(staging.resolve()):
        raise DownloadError(f"{archive.name}: refusing the member {name!r} (outside the folder)")


def safe_extract(archive: str | os.PathLike, staging: str | os.PathLike) -> None:
    """Unpack a tar or a zip (told apart by content) into the empty folder ``staging``:
    regular files and folders only; a member with an absolute path, a ``..`` that leaves
    the folder, or a link (symbolic or hard) is refused.

    Raises:
        DownloadError: a refused member, or an archive that cannot be read to its end
            (truncated, corrupt).
    """
    archive, staging = Path(archive), Path(staging)
    packing = packing_of(archive)
    try:
        if packing == ".tar":
            with tarfile.open(archive) as tar:
                members = []
                for member in tar.getmembers():
                    _validate_name(member.name, staging, archive)
                    if member.issym() or member.islnk():
                        raise DownloadError(f"{archive.name}: refusing the link {member.name!r}")
                    if member.isfile() or member.isdir():
                        members.append(member)
                tar.extractall(staging, members=members, filter="data")
        elif packing == ".zip":
            with zipfile.ZipFile(archive) as z:
                infos = z.infolist()
                for info in infos:
                    _validate_name(info.filename, staging, archive)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise DownloadError(f"{archive.name}: refusing the link {info.filename!r}")
                for info in infos:
                    z.extract(info, staging)
        else:
            raise DownloadError(f"{archive.name} is neither a tar nor a zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as error:
        raise DownloadError(
            f"{archive.name} cannot be read to its end ({type(error).__name__}: {error}): "
            "truncated or corrupt"
        ) from error


def install(
    archive: str | os.PathLike,
    destination: str | os.PathLike,
    locate: Callable[[Path], Path],
    verify: Callable[[Path], object],
    last: str = "",
) -> Path:
    """Unpack ``archive`` beside ``destination``, check it, then move it into place.

    Args:
        archive: a tar or a zip.
        destination: the folder the data set's tree must end up in (e.g.
            ``DATA/VOCdevkit/VOC2007``).
        locate: given the extraction folder, returns the folder inside it that is the
            tree (archives differ in what they put above it); raises
            :class:`DownloadError` when there is none.
        verify: raises :class:`DownloadError` when the tree is not complete.
        last: files whose path contains it are moved in after every other when the
            destination already exists (the split lists: their presence means complete).

    Returns:
        ``destination``. On any error nothing is left beside or in it.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-extract-", dir=destination.parent))
    try:
        safe_extract(archive, staging)
        tree = locate(staging)
        verify(tree)
        if not destination.exists():
            os.replace(tree, destination)  # one rename: there or not there
            return destination
        files = sorted(p for p in tree.rglob("*") if p.is_file())
        files.sort(key=lambda p: bool(last) and last in p.relative_to(tree).as_posix())
        for file in files:
            target = destination / file.relative_to(tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
        return destination
    finally:
        shutil.rmtree(staging, ignore_errors=True)
