"""The spool's durability discipline, observed at the fsync(2) calls it makes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bombom_pipe import spool


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories fsynced, in order (the real fsync still runs)."""
    seen: list[Path] = []
    real = os.fsync

    def spy(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            seen.append(path)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def _fan(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:2]


def test_each_new_directory_is_synced_in_its_parent_once(tmp_path: Path,
                                                         synced: list[Path]) -> None:
    root = tmp_path / "spool"
    root.mkdir()
    a1 = b"first"
    a2 = next(m for m in (b"%d" % i for i in range(100_000)) if _fan(m) == _fan(a1))
    b = next(m for m in (b"%d" % i for i in range(100)) if _fan(m) != _fan(a1))
    first = spool.save_bytes(root, "raw", a1)
    ab = first.path.parent
    # tmp/ and raw/ are new entries of the spool, raw/ab/ of raw/, the message of raw/ab/
    assert set(synced) == {root, root / "raw", ab}, synced
    synced.clear()
    spool.save_bytes(root, "raw", a2)
    assert synced == [ab]  # nothing new but the file: one directory sync, as before
    synced.clear()
    other = spool.save_bytes(root, "raw", b)
    assert set(synced) == {root / "raw", other.path.parent}
