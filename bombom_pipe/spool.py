"""Raw messages on disk, durably, named by the SHA-256 of their bytes.

Layout under the spool directory:
    tmp/<random>               being written (O_EXCL, 0600); never read by anyone else
    raw/<ab>/<sha256>.eml      complete messages; the same bytes always land on the same name

A message is written to tmp/, fsynced, renamed into raw/ and the directory fsynced (the maildir
discipline of Postfix's virtual(8)), so a crash leaves either nothing or a complete file under its
final name. Attachments use the same store under att/.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 16


class SpoolError(Exception):
    """The message could not be saved (disk full, permissions): the delivery must be retried."""


@dataclass(frozen=True, slots=True)
class Saved:
    sha256: str
    path: Path
    size: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _final_path(root: Path, kind: str, sha256: str, suffix: str) -> Path:
    return root / kind / sha256[:2] / f"{sha256}{suffix}"


def _store(root: Path, kind: str, suffix: str, chunks: Iterable[bytes]) -> Saved:
    """Write an iterable of byte chunks under its hash; the one durable-write routine."""
    tmpdir = root / "tmp"
    try:
        tmpdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = tmpdir / f"{os.getpid()}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise SpoolError(f"cannot create a file in {tmpdir}: {e.strerror}") from e
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb", closefd=True) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        final = _final_path(root, kind, sha, suffix)
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.rename(tmp, final)  # atomic; same bytes -> same name, so replacing is harmless
        _fsync_dir(final.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SpoolError(f"cannot save to {root}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Saved(sha, final, size)


def save_stream(root: Path, stream: BinaryIO) -> Saved:
    """Stream stdin (or any binary file) to the spool without holding it all in memory."""
    return _store(root, "raw", ".eml", iter(lambda: stream.read(CHUNK), b""))


def save_bytes(root: Path, kind: str, data: bytes, suffix: str = "") -> Saved:
    """Save bytes already in memory (attachments, or a message in tests and replays)."""
    sha = hashlib.sha256(data).hexdigest()
    final = _final_path(root, kind, sha, suffix)
    if final.exists():
        return Saved(sha, final, len(data))
    return _store(root, kind, suffix, (data,))


def raw_path(root: Path, sha256: str) -> Path:
    return _final_path(root, "raw", sha256, ".eml")
