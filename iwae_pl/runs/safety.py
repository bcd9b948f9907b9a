"""Checkpoints are data: every checkpoint is loaded with ``torch.load(weights_only=True)``, never unpickled
with code execution, whether it is a local file or an http(s) URL.

A remote checkpoint is downloaded into ``<cache>/checkpoints/`` (a temporary file in that directory,
renamed into place only when complete: a reader never sees half a file), checked to load with
``weights_only=True`` (and against ``#sha256=<hex>`` when the URL carries one) and only then handed to
Lightning as a local path. torch.hub's URL cache is not used: it keys files by name alone, so a later URL
with the same file name would get the earlier file.

Every failure is one line: :class:`CheckpointError` (a ``DataError``: exit code 1) naming the file and
what is wrong with it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..data.download import CannotWrite, DownloadFailed, download_atomically, file_checksum
from ..errors import DataError

ENV_CACHE = "IWAE_PL_CACHE_DIR"
DEFAULT_CACHE = "~/.cache/iwae_pl"


class CheckpointError(DataError):
    """A checkpoint that is missing, unreadable, truncated, from elsewhere, or would run code on load."""


def is_url(path: str | os.PathLike) -> bool:
    return urllib.parse.urlsplit(str(path)).scheme in ("http", "https")


def load_checkpoint(path: str | os.PathLike, label: str | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU; one-line ``CheckpointError`` on any failure.

    A file whose unpickling would import and call arbitrary objects (``os.system``, a class's
    ``__reduce__``) is refused, not loaded.
    """
    path = Path(path)
    what = label or f"ckpt_path {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{what}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = " ".join(str(e).split())
        if "weights_only" in reason or "global" in reason.lower():
            detail = ""
            if "Unsupported global:" in reason:  # e.g. "GLOBAL builtins.exec was not an allowed global"
                detail = reason.split("Unsupported global:")[-1].split(". ")[0].strip()
            raise CheckpointError(
                f"{what} refused: loading it would execute code"
                f"{f' ({detail})' if detail else ''}; checkpoints are data: only files that "
                "torch.load(weights_only=True) accepts are loaded") from None
        raise CheckpointError(f"{what} is not a readable checkpoint (corrupt): {reason[:200]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{what} is not a readable checkpoint (truncated or corrupt): "
                              f"{type(e).__name__}: {reason}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{what} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def cache_dir() -> Path:
    """$IWAE_PL_CACHE_DIR, else ~/.cache/iwae_pl: where remote checkpoints are kept."""
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser()


def fetch_checkpoint(url: str, directory: str | os.PathLike | None = None) -> tuple[Path, dict[str, Any]]:
    """Download ``url`` atomically into ``<directory>/checkpoints/`` and verify it: (local path, contents).

    The local name contains a hash of the whole URL, so two URLs never share a file. A URL fragment
    ``#sha256=<hex>`` is checked against the downloaded bytes. The file must load with
    ``weights_only=True`` (see :func:`load_checkpoint`); otherwise it is deleted and refused.
    """
    parts = urllib.parse.urlsplit(url)
    expected_sha = None
    if parts.fragment.startswith("sha256="):
        expected_sha = parts.fragment.split("=", 1)[1].lower()
    clean = urllib.parse.urlunsplit(parts._replace(fragment=""))
    name = Path(parts.path).name or "checkpoint.ckpt"
    key = hashlib.sha256(clean.encode()).hexdigest()[:16]
    target_dir = Path(directory if directory is not None else cache_dir()) / "checkpoints"
    target = target_dir / f"{key}-{name}"
    if target.is_file():  # cached: verified when it was written, verified again on load
        _check_sha(target, expected_sha, url)
        return target, load_checkpoint(target, label=f"ckpt_path {url} (cached as {target})")
    loaded: dict[str, Any] = {}

    def verify(tmp: Path) -> None:
        _check_sha(tmp, expected_sha, url)
        loaded.update(load_checkpoint(tmp, label=f"ckpt_path {url}"))

    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        download_atomically(clean, target, verify)
    except (OSError, CannotWrite) as e:
        raise CheckpointError(f"cannot write to {target_dir} to download ckpt_path {url}: {e}") from None
    except DownloadFailed as e:
        raise CheckpointError(f"ckpt_path {url}: {e}") from None
    return target, loaded


def _check_sha(path: Path, expected: str | None, url: str) -> None:
    if expected is not None and (actual := file_checksum(path, "sha256")) != expected:
        raise CheckpointError(f"ckpt_path {url}: sha256 {actual} does not match the URL's {expected}")


def local_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A checkpoint given on the command line (local path or http(s) URL) as (local path, contents)."""
    if is_url(path):
        return fetch_checkpoint(str(path))
    return Path(path), load_checkpoint(path)
