"""A cache of downloaded weight files: hash-checked, atomic, usable offline.

* Folder: ``$AQFORMER_CACHE`` if set, else ``<torch.hub.get_dir()>/aqformer`` (``~/.cache/torch/hub/aqformer``).
* Hashes: a file whose name carries a SHA-256 prefix (torch hub's ``name-<hex>.ext``, at least 8 hex digits)
  must match it. Every file also gets a record ``<file>.sha256`` (``sha256sum`` format) when it is downloaded,
  or on first use when it was copied into the cache by hand; every later use re-hashes the file against it.
* Atomicity: a download streams into ``<file>.partial`` (:func:`~aqformer_d2.checkpoint.atomic_write`); the
  length (``Content-Length``) and hash are checked before the rename, and on any failure nothing is left.
* Offline: a failed download raises :class:`WeightDownloadError` naming the URL, the path where the file is
  expected and what to do by hand (the caller's ``hint``).

``torch.hub.download_url_to_file`` is not used: it sets no socket timeout, and it keeps a transfer cut off
early as complete when no hash prefix is known (timm and detectron2 files), whose hash would then be recorded
as the truth. Concurrent processes (one per GPU) serialise on iopath's ``file_lock`` (``<file>.lock``).
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from typing import IO, Optional

from iopath.common.file_io import file_lock

from .checkpointer import atomic_write

__all__ = [
    "WeightDownloadError", "WeightHashError", "fetch_verified", "hash_prefix_from_name", "hash_record_path",
    "read_hash_record", "sha256_of_file", "verify_cached_file", "weights_cache_dir"
]

logger = logging.getLogger(__name__)

CACHE_ENV = "AQFORMER_CACHE"
# Seconds a blocked socket operation (connect, read) may take before the download is abandoned.
DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
# "resnet50-0676ba61.pth" -> "0676ba61"; at least 8 hex digits, so that "R-50.pkl" carries no hash.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^/]*$")


class WeightDownloadError(OSError):
    """A weight file could not be downloaded (offline, HTTP error, cut off). The message says what to do."""


class WeightHashError(ValueError):
    """A weight file's SHA-256 differs from the one in its name or recorded at first download."""


def weights_cache_dir() -> str:
    """``$AQFORMER_CACHE`` if set (and not empty), else ``<torch.hub.get_dir()>/aqformer``."""
    root = os.environ.get(CACHE_ENV, "")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "aqformer")


def hash_prefix_from_name(filename: str) -> Optional[str]:
    """The SHA-256 prefix a file name carries by torch hub's convention, or None."""
    m = _HASH_IN_NAME.search(os.path.basename(filename))
    return m.group(1) if m else None


def sha256_of_file(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_record_path(path: str) -> str:
    """Where the SHA-256 of ``path`` recorded at first download is kept."""
    return path + ".sha256"


def read_hash_record(path: str) -> Optional[str]:
    """The recorded SHA-256 of ``path``, or None without a record.

    Raises:
        WeightHashError: the record exists but does not hold a SHA-256.
    """
    record = hash_record_path(path)
    if not os.path.isfile(record):
        return None
    with open(record, "r", encoding="utf-8") as f:
        text = f.read().split()
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0]):
        raise WeightHashError(f"{record}: not a SHA-256 record (expected '<64 hex digits>  <file name>')")
    return text[0]


def _check_and_record(path: str, digest: str, *, hash_prefix: Optional[str], what: str, advice: str) -> bool:
    """Check the SHA-256 ``digest`` of ``path``'s content against the prefix in its name and its record; without
    a record, write one (and return True).

    Raises:
        WeightHashError: ``digest`` contradicts either; the message is ``what``, the mismatch, then ``advice``.
    """
    recorded = read_hash_record(path)
    if hash_prefix is not None and not digest.startswith(hash_prefix):
        raise WeightHashError(
            f"{what}: SHA-256 {digest} does not start with {hash_prefix}, the prefix in the file name: "
            f"the file is corrupt or not the released one{advice}"
        )
    if recorded is not None and digest != recorded:
        raise WeightHashError(
            f"{what}: SHA-256 {digest} differs from {recorded}, recorded when the file was first downloaded{advice}"
        )
    if recorded is None:
        line = f"{digest}  {os.path.basename(path)}\n".encode("utf-8")
        atomic_write(hash_record_path(path), lambda f: f.write(line))
    return recorded is None


def verify_cached_file(path: str, *, hash_prefix: Optional[str] = None) -> str:
    """Re-hash a cached file against its name's prefix and its record; returns the SHA-256.

    A file without a record (copied in by hand) passes the prefix check (if any) and is then recorded.

    Raises:
        WeightHashError: the file does not match (the message says to delete it to download it again).
    """
    digest = sha256_of_file(path)
    advice = f". Delete {path} (and {hash_record_path(path)} if the new file is the one you want) to download it again."
    if _check_and_record(path, digest, hash_prefix=hash_prefix, what=path, advice=advice):
        logger.info("%s: no hash record yet; recording SHA-256 %s (checked on every later use)", path, digest)
    return digest


def _download_reason(error: BaseException) -> str:
    """A one-line reason for a failed download (no traceback)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def _download(url: str, dest: str, *, hash_prefix: Optional[str], timeout_s: float, what: str, hint: str) -> None:
    """Stream ``url`` into ``dest`` all or nothing, after checking its length and hash (and recording the hash)."""
    where = f"The file is expected at {dest}. {hint}"

    def write(out: IO[bytes]) -> None:
        digest, num_bytes, expected = hashlib.sha256(), 0, None
        request = urllib.request.Request(url, headers={"User-Agent": "aqformer_d2-weights"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                length = response.headers.get("Content-Length")
                expected = int(length) if length is not None and length.strip().isdigit() else None
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    num_bytes += len(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise WeightDownloadError(f"{what}: could not download {url} ({_download_reason(e)}). {where}") from None
        if expected is not None and num_bytes != expected:
            raise WeightDownloadError(
                f"{what}: the download of {url} was cut off after {num_bytes} of {expected} bytes; nothing was "
                f"kept. {where}"
            )
        # records the hash before the rename: a file under its final name always has a record
        _check_and_record(dest, digest.hexdigest(), hash_prefix=hash_prefix, what=f"{what}: download of {url}",
                          advice=f"; refused, nothing was kept in {os.path.dirname(dest)}")
        logger.info("%s: %s (%d bytes, SHA-256 %s)", what, dest, num_bytes, digest.hexdigest())

    logger.info("%s: downloading %s to %s", what, url, dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    atomic_write(dest, write)


def fetch_verified(
    url: str,
    dest: str,
    *,
    hash_prefix: Optional[str] = None,
    what: str = "",
    hint: str = "",
    force: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Return ``dest``, a verified copy of ``url``; download it first if it is not in the cache.

    Args:
        url: where the file is downloaded from.
        dest: its path in the cache.
        hash_prefix: SHA-256 prefix the file must have (from its released name), or None.
        what: the name users gave (e.g. ``torchvision://resnet50``), for messages.
        hint: what to do without network access, appended to download errors.
        force: download again even if ``dest`` exists (the hash record, if any, is still enforced).
        timeout_s: socket timeout per blocking operation.

    Raises:
        WeightDownloadError: the download failed or was cut off (nothing is left in the cache).
        WeightHashError: the downloaded or cached file does not match its expected hash.
    """
    what = what or url
    with file_lock(dest):
        if os.path.isfile(dest) and not force:
            verify_cached_file(dest, hash_prefix=hash_prefix)
            logger.info("%s: using cached %s", what, dest)
        else:
            _download(url, dest, hash_prefix=hash_prefix, timeout_s=timeout_s, what=what, hint=hint)
    return dest
