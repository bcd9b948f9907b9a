"""Checksum-verified, atomic file download and local file verification.

A :class:`RemoteFile` names one data file (as stored in ``<data_dir>/<dataset>/<name>``), the URLs it can
be downloaded from (mirrors, tried in order) and its checksum, written ``"algo:hexdigest"`` with ``algo``
one of ``md5``, ``sha1``, ``sha256`` or ``git-blob-sha1`` (the SHA-1 git gives a blob:
``sha1(b"blob %d\\0" % size + content)``, which is what a GitHub tree lists).

:func:`fetch` is the single entry point the loaders use: it looks for the file locally, verifies it, and
downloads it only when it is missing and downloading is allowed.  A download streams into a temporary file
in the destination directory, is checked (byte count against Content-Length, then checksum) and only then
renamed into place with :func:`os.replace`, so a reader never sees a partial or unverified file, and
concurrent downloaders (e.g. several DDP ranks) cannot corrupt each other.

Every failure is reported as a one-line :class:`DataError` that names the file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import stat
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from iwae_pl.errors import DataError, DataSettingError  # noqa: F401 - re-exported to the sources

__all__ = ["DataError", "RemoteFile", "file_checksum", "verify_file", "download", "fetch", "find_local", "ALGORITHMS"]

ALGORITHMS = ("md5", "sha1", "sha256", "git-blob-sha1")
CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation; module-level so tests can shorten it


@dataclass(frozen=True)
class RemoteFile:
    """One data file: its name, download mirrors and expected checksum(s).

    ``content_checksum`` is an alternative accepted for ``.gz`` files: the checksum of the *decompressed*
    content. Re-packaged copies (e.g. Debian's) hold the same data in differently compressed bytes.
    ``urls`` may be empty for a file that is only ever used when already present locally.
    """

    name: str
    urls: tuple[str, ...]
    checksum: str
    content_checksum: str | None = None

    def __post_init__(self) -> None:
        for value in (self.checksum, self.content_checksum):
            if value is not None:
                _split_checksum(value)


def _split_checksum(checksum: str) -> tuple[str, str]:
    algo, sep, digest = checksum.partition(":")
    if not sep or algo not in ALGORITHMS or not digest:
        raise DataError(f"bad checksum spec {checksum!r}: expected 'ALGO:HEX' with ALGO one of "
                        f"{', '.join(ALGORITHMS)}")
    return algo, digest.lower()


def _digest_stream(chunks: Iterable[bytes], algo: str, size: int | None = None) -> str:
    if algo == "git-blob-sha1":
        if size is None:
            raise ValueError("git-blob-sha1 needs the content size up front")
        h = hashlib.sha1(b"blob %d\0" % size)
    else:
        h = hashlib.new(algo)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _read_chunks(f) -> Iterable[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def file_checksum(path: str | os.PathLike, algo: str, *, gunzip: bool = False) -> str:
    """Hex digest of the file at ``path`` (of its gunzipped content if ``gunzip``); ``algo`` in ALGORITHMS."""
    path = Path(path)
    if not gunzip:
        with open(path, "rb") as f:
            return _digest_stream(_read_chunks(f), algo, path.stat().st_size)
    size = None
    if algo == "git-blob-sha1":  # needs the decompressed size first: one extra pass
        with gzip.open(path, "rb") as f:
            size = sum(len(c) for c in _read_chunks(f))
    with gzip.open(path, "rb") as f:
        return _digest_stream(_read_chunks(f), algo, size)


def _mismatch(path: Path, remote: RemoteFile) -> str | None:
    """None if ``path`` matches ``remote``'s checksum (or content checksum), else 'expected ..., got ...'."""
    algo, expected = _split_checksum(remote.checksum)
    actual = file_checksum(path, algo)
    if actual == expected:
        return None
    text = f"expected {algo} {expected}, got {actual}"
    if remote.content_checksum is not None:
        c_algo, c_expected = _split_checksum(remote.content_checksum)
        try:
            c_actual = file_checksum(path, c_algo, gunzip=True)
        except (OSError, EOFError, zlib.error) as e:  # not a (complete) gzip stream
            c_actual = f"unreadable gzip ({type(e).__name__})"
        if c_actual == c_expected:
            return None
        text += f" (or {c_algo} {c_expected} of the decompressed content, got {c_actual})"
    return text


def verify_file(path: str | os.PathLike, remote: RemoteFile) -> Path:
    """Check a local file against ``remote``'s checksum; raise DataError naming the file otherwise."""
    path = Path(path)
    try:
        problem = _mismatch(path, remote)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if problem is not None:
        raise DataError(
            f"checksum mismatch for {path}: {problem}; the file is corrupt or not the expected one, "
            f"delete it to download it again"
        )
    return path


def download(remote: RemoteFile, dest_dir: str | os.PathLike) -> Path:
    """Download ``remote`` into ``dest_dir`` atomically, trying each mirror in turn; return the final path.

    Nothing is left at the destination unless a complete, checksum-verified file was received.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / remote.name
    if not remote.urls:
        raise DataError(f"{remote.name} has no download URL; place it in {dest_dir} by hand")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest_dir} to download {remote.name} into: {e}") from e
    if not _writable(dest_dir):
        raise DataError(f"cannot download {remote.name}: {dest_dir} is read-only")
    failures = []
    for url in remote.urls:
        try:
            _download_one(url, remote, target)
            return target
        except DownloadFailed as e:
            failures.append(f"{url}: {e}")
    raise DataError(f"could not download {remote.name} into {dest_dir}: " + "; ".join(failures))


def _writable(directory: Path) -> bool:
    # root passes os.access() everywhere; a directory without any write bit (a shared, read-only data
    # directory) is still left alone.
    return os.access(directory, os.W_OK) and bool(stat.S_IMODE(directory.stat().st_mode) & 0o222)


class DownloadFailed(Exception):
    """One mirror failed; the next one is tried."""


def _download_one(url: str, remote: RemoteFile, target: Path) -> None:
    def verify(tmp: Path) -> None:
        problem = _mismatch(tmp, remote)
        if problem is not None:
            raise DownloadFailed(f"checksum mismatch, {problem}")

    try:
        download_atomically(url, target, verify)
    except CannotWrite as e:  # read-only directory, full disk: no mirror can help
        raise DataError(f"cannot write to {target.parent} to download {remote.name}: {e}") from e


class CannotWrite(Exception):
    """The target's directory takes no new file (no retry or mirror can help)."""


def download_atomically(url: str, target: Path, verify: Callable[[Path], None]) -> None:
    """Download ``url`` to ``target`` so that a reader never sees half a file: stream into a temporary
    file beside it, fsync, check the byte count against Content-Length, ``verify(temporary path)``
    (it raises to refuse the file), then rename into place. Nothing is left behind on failure.

    Raises:
        CannotWrite: no temporary file can be created in the target's directory.
        DownloadFailed: a network error, a short body, or a write error.
        Whatever ``verify`` raises.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as e:
        raise CannotWrite(str(e)) from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            received, expected = _stream(url, out)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and received != expected:
            raise DownloadFailed(f"incomplete download, received {received} of {expected} bytes")
        verify(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; downloaded files are meant to be shared
        os.replace(tmp, target)
    except OSError as e:
        raise DownloadFailed(f"cannot write {target}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out) -> tuple[int, int | None]:
    """Copy ``url``'s body into ``out``; return (bytes received, Content-Length or None)."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None and length.isdigit() else None
            received = 0
            # http.client returns b"" instead of raising when a Content-Length body is cut short,
            # so the caller compares the byte count itself.
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
            return received, expected
    except urllib.error.HTTPError as e:
        raise DownloadFailed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadFailed(f"network error ({e.reason})") from e
    except (http.client.HTTPException, OSError) as e:  # IncompleteRead, reset, timeout
        raise DownloadFailed(f"network error ({type(e).__name__}: {e})") from e


def find_local(remote: RemoteFile, search_dirs: Iterable[str | os.PathLike]) -> Path | None:
    """The verified first copy of ``remote`` in ``search_dirs``, or None (never downloads; a copy with a
    wrong checksum is an error)."""
    for d in search_dirs:
        candidate = Path(d) / remote.name
        if candidate.is_file():
            return verify_file(candidate, remote)
    return None


def fetch(
    remote: RemoteFile,
    search_dirs: Iterable[str | os.PathLike],
    download_dir: str | os.PathLike,
    *,
    allow_download: bool,
    hint: str,
) -> Path:
    """Return the verified path of ``remote``: the first copy found in ``search_dirs``, else a fresh download.

    ``hint`` says how to get the file by hand; it ends the one-line error raised when the file is missing
    and cannot be downloaded. A local copy with a wrong checksum is an error, never silently replaced.
    """
    dirs = [Path(d) for d in search_dirs]
    local = find_local(remote, dirs)
    if local is not None:
        return local
    where = ", ".join(str(d) for d in dirs)
    if not allow_download:
        raise DataError(f"{remote.name} not found in {where} and download=False; {hint}")
    if not remote.urls:
        raise DataError(f"{remote.name} not found in {where} and it cannot be downloaded; {hint}")
    try:
        return download(remote, download_dir)
    except DataError as e:
        raise DataError(f"{remote.name} not found in {where}; {e}; {hint}") from e
