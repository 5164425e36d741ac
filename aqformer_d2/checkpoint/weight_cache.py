"""A cache of downloaded weight files: hash-checked, atomic, usable offline.

* Folder: ``$AQFORMER_CACHE`` if set, else ``<torch hub dir>/aqformer`` (torch's hub dir is
  ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``).
* Verification: a file whose name carries a SHA-256 prefix (torch hub's ``name-<hex>.ext`` convention,
  at least 8 hex digits) must match it. Every downloaded file also gets a record ``<file>.sha256``
  (``sha256sum`` format) written when it is first downloaded; every later use re-hashes the file and
  compares. A file found in the cache without a record (copied there by hand) is recorded on first use.
* Atomicity: a download goes to a temporary ``.part`` file in the same folder, is checked (length
  against ``Content-Length``, hash), and only then renamed to its final name; on any failure the
  temporary file is removed. An interrupted or corrupt download therefore never leaves a file that a
  later run trusts.
* Offline: a download that fails raises :class:`WeightDownloadError` whose message names the URL, the
  path where the file is expected and what to do by hand (the caller supplies that part).

Concurrent processes (one per GPU) serialise on a lock file ``<file>.lock``.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from typing import BinaryIO, Optional, Tuple

from iopath.common.file_io import file_lock

__all__ = [
    "CACHE_ENV",
    "WeightDownloadError",
    "WeightHashError",
    "fetch_verified",
    "hash_prefix_from_name",
    "hash_record_path",
    "read_hash_record",
    "sha256_of_file",
    "verify_cached_file",
    "weights_cache_dir",
    "write_file_atomic",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "AQFORMER_CACHE"
# Sub-folder of torch's hub directory used when $AQFORMER_CACHE is unset.
TORCH_HUB_SUBDIR = "aqformer"
# Seconds a blocked socket operation (connect, read) may take before the download is abandoned.
DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
# torch hub's convention ("resnet50-0676ba61.pth" -> "0676ba61"), with at least 8 hex digits so that
# names such as detectron2's "R-50.pkl" are not read as carrying a hash.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^/]*$")
_HASH_RECORD_SUFFIX = ".sha256"


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

    return os.path.join(torch.hub.get_dir(), TORCH_HUB_SUBDIR)


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
    return path + _HASH_RECORD_SUFFIX


def read_hash_record(path: str) -> Optional[str]:
    """The recorded SHA-256 of ``path``, or None when there is no record.

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


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_hash_record(path: str, digest: str) -> None:
    write_file_atomic(hash_record_path(path), f"{digest}  {os.path.basename(path)}\n".encode("utf-8"))


def _check_digest(digest: str, *, hash_prefix: Optional[str], recorded: Optional[str], what: str) -> None:
    """Raise WeightHashError if ``digest`` contradicts the name's prefix or the recorded hash."""
    if hash_prefix is not None and not digest.startswith(hash_prefix):
        raise WeightHashError(
            f"{what}: SHA-256 {digest} does not start with {hash_prefix}, the prefix in the file name: "
            "the file is corrupt or not the released one"
        )
    if recorded is not None and digest != recorded:
        raise WeightHashError(
            f"{what}: SHA-256 {digest} differs from {recorded}, recorded when the file was first downloaded"
        )


def verify_cached_file(path: str, *, hash_prefix: Optional[str] = None) -> str:
    """Re-hash a cached file and check it against its name's prefix and its record; returns the SHA-256.

    A file without a record (copied into the cache by hand) passes the prefix check (if any) and is then
    recorded, so that later uses check against this first hash.

    Raises:
        WeightHashError: the file does not match (the message says to delete it to download again).
    """
    digest = sha256_of_file(path)
    recorded = read_hash_record(path)
    try:
        _check_digest(digest, hash_prefix=hash_prefix, recorded=recorded, what=path)
    except WeightHashError as e:
        raise WeightHashError(
            f"{e}. Delete {path} (and {hash_record_path(path)} if the new file is the one you want) "
            "to download it again."
        ) from None
    if recorded is None:
        logger.info("%s: no hash record yet; recording SHA-256 %s (checked on every later use)", path, digest)
        _write_hash_record(path, digest)
    return digest


def _stream_to_file(url: str, out: BinaryIO, timeout_s: float) -> Tuple[str, int, Optional[int]]:
    """Copy ``url`` into ``out``; returns ``(sha256 hex, bytes read, Content-Length or None)``.

    Network failures propagate as urllib / http.client / OSError exceptions.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "aqformer_d2-weights"})
    digest = hashlib.sha256()
    num_bytes = 0
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.strip().isdigit() else None
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            num_bytes += len(chunk)
    return digest.hexdigest(), num_bytes, expected


def _download_reason(error: BaseException) -> str:
    """A one-line reason for a failed download (no traceback)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{type(error.reason).__name__}: {error.reason}" if isinstance(error.reason, BaseException) else str(
            error.reason
        )
    return f"{type(error).__name__}: {error}"


def _download(url: str, dest: str, *, hash_prefix: Optional[str], timeout_s: float, what: str, hint: str) -> str:
    """Download ``url`` to ``dest`` atomically after checking length and hash; returns the SHA-256."""
    folder = os.path.dirname(dest)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(dest) + ".", suffix=".part")
    try:
        logger.info("%s: downloading %s to %s", what, url, dest)
        try:
            with os.fdopen(fd, "wb") as out:
                digest, num_bytes, expected = _stream_to_file(url, out, timeout_s)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise WeightDownloadError(
                f"{what}: could not download {url} ({_download_reason(e)}). The file is expected at {dest}. {hint}"
            ) from None
        if expected is not None and num_bytes != expected:
            raise WeightDownloadError(
                f"{what}: the download of {url} was cut off after {num_bytes} of {expected} bytes; nothing was "
                f"kept. The file is expected at {dest}. {hint}"
            )
        recorded = read_hash_record(dest)
        try:
            _check_digest(digest, hash_prefix=hash_prefix, recorded=recorded, what=f"{what}: download of {url}")
        except WeightHashError as e:
            raise WeightHashError(f"{e}; refused, nothing was kept in {folder}") from None
        # The record goes first: a file that reaches its final name always has one.
        if recorded is None:
            _write_hash_record(dest, digest)
        os.replace(tmp, dest)
        logger.info("%s: %s (%d bytes, SHA-256 %s)", what, dest, num_bytes, digest)
        return digest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
            return dest
        _download(url, dest, hash_prefix=hash_prefix, timeout_s=timeout_s, what=what, hint=hint)
    return dest
