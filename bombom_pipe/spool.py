"""Raw messages on disk, durably, named by the SHA-256 of their bytes.

Layout under the spool directory:
    tmp/<random>               being written (O_EXCL, 0600); never read by anyone else
    raw/<ab>/<sha256>.eml      complete messages; the same bytes always land on the same name

A message is written to tmp/, fsynced, renamed into raw/ and the directory fsynced (the maildir
discipline of Postfix's virtual(8)), so a crash leaves either nothing or a complete file under its
final name; a directory made on the way is fsynced in its parent. Attachments use the same store
under att/.

The spool belongs to the pipe user. `files` is how anyone else (root running `bombom prune`)
walks it: relative to open directories, never following a link the owner may have planted.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

TYPE_CHECKING = False  # not `typing`'s: bombom-deliver runs this per message; typing costs 3 ms
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 16

# The interpreter's built-in SHA-256, not hashlib's OpenSSL one: bombom-deliver runs this on every
# message, and loading libcrypto (with `secrets`) costs it ~5 MB of its ~13 MB.
try:
    from _sha2 import sha256  # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - an interpreter built without them
        from hashlib import sha256


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


def _makedirs(path: Path) -> None:
    """`mkdir -p`, 0700. A directory made here is fsynced in its parent, once, as Postfix does
    for its queue directories: the files later renamed into it must not lose their way there."""
    if path.is_dir():
        return
    try:
        try:
            os.mkdir(path, 0o700)
        except FileNotFoundError:
            _makedirs(path.parent)
            os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # a concurrent delivery made it and may not have synced its parent yet
    _fsync_dir(path.parent)


def _final_path(root: Path, kind: str, sha256: str, suffix: str) -> Path:
    return root / kind / sha256[:2] / f"{sha256}{suffix}"


def _store(root: Path, kind: str, suffix: str, chunks: Iterable[bytes]) -> Saved:
    """Write an iterable of byte chunks under its hash; the one durable-write routine."""
    tmpdir = root / "tmp"
    try:
        _makedirs(tmpdir)
        tmp = tmpdir / f"{os.getpid()}.{os.urandom(8).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise SpoolError(f"cannot create a file in {tmpdir}: {e.strerror}") from e
    digest = sha256()
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
        _makedirs(final.parent)
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
    sha = sha256(data).hexdigest()
    final = _final_path(root, kind, sha, suffix)
    if final.exists():
        return Saved(sha, final, len(data))
    return _store(root, kind, suffix, (data,))


def raw_path(root: Path, sha256: str) -> Path:
    return _final_path(root, "raw", sha256, ".eml")


def count_death(root: os.PathLike[str], sha256: str) -> int:
    """Count one more death or timeout of a process delivering this message (judge.py), at
    `deaths/<ab>/<sha256>`, a byte each; returns how many so far. Not fsynced: a count lost in
    a crash costs one more try. 1 when the spool cannot keep the count."""
    path = _final_path(Path(root), "deaths", sha256, "")
    try:
        _makedirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"x")
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError:
        return 1


def sha256_of(path: Path) -> tuple[str, int]:
    """The SHA-256 of a file's bytes (hex), and its size."""
    digest = sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True, slots=True)
class Linked:
    saved: Saved
    head: bytes  # the file's first CHUNK bytes (its header block, as a rule)
    mtime: float


def link_or_save(root: Path, source: Path) -> Linked:
    """Keep a file someone else wrote durably already (a Maildir file of virtual(8)) in the
    raw store, reading it once: a hard link under its SHA-256 where both are on one file
    system, else a copy."""
    with open(source, "rb") as f:
        mtime = os.fstat(f.fileno()).st_mtime
        head = f.read(CHUNK)
        digest, size = sha256(head), len(head)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
        sha = digest.hexdigest()
        final = _final_path(root, "raw", sha, ".eml")
        saved = Saved(sha, final, size)
        if final.exists():
            return Linked(saved, head, mtime)
        try:
            _makedirs(final.parent)
            try:
                os.link(source, final)
            except FileExistsError:
                return Linked(saved, head, mtime)
            _fsync_dir(final.parent)
        except OSError:
            f.seek(0)
            saved = save_stream(root, f)
    return Linked(saved, head, mtime)


SUFFIX = {"raw": ".eml", "att": ""}
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Entry:
    """A regular file of the spool's layout; `dir_fd` (its directory) is open while the iteration
    stands on it, so `unlink` removes this very entry, whatever was renamed meanwhile."""

    dir_fd: int
    name: str
    sha256: str
    stat: os.stat_result

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.dir_fd)


def files(root: Path, kind: str) -> Iterator[Entry]:
    """Every regular file at `<root>/<kind>/<ab>/<sha256><suffix>`. Each directory is opened
    relative to its parent with O_NOFOLLOW and each file is lstat'ed, so links and other odd
    entries are skipped: a walk as root never leaves the spool tree."""
    pattern = re.compile(r"[0-9a-f]{64}" + re.escape(SUFFIX[kind]))
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # configured by root
    except OSError:
        return
    try:
        yield from _files_at(top, kind, pattern)
    finally:
        os.close(top)


def _files_at(top: int, kind: str, pattern: re.Pattern[str]) -> Iterator[Entry]:
    try:
        kind_fd = os.open(kind, _NOFOLLOW_DIR, dir_fd=top)
    except OSError:  # missing, a link (ELOOP) or not a directory
        return
    try:
        for sub in sorted(os.listdir(kind_fd)):
            if not re.fullmatch(r"[0-9a-f]{2}", sub):
                continue
            try:
                sub_fd = os.open(sub, _NOFOLLOW_DIR, dir_fd=kind_fd)
            except OSError:
                continue
            try:
                for name in sorted(os.listdir(sub_fd)):
                    if not (pattern.fullmatch(name) and name.startswith(sub)):
                        continue
                    try:
                        st = os.stat(name, dir_fd=sub_fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        yield Entry(sub_fd, name, name[:64], st)
            finally:
                os.close(sub_fd)
    finally:
        os.close(kind_fd)
