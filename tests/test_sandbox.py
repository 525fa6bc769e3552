"""The test/demo sandbox run as root: no other local user can steer what it runs or writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .sandbox import DELIVER_USER, RUNNER_CACHE, LocalPostgres, delivery_files, give, root_only_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the risk exists only as root")


@pytest.fixture
def tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="bombom-sandbox-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_directory_another_user_made_is_refused(tmp: Path) -> None:
    planted = tmp / "cache"
    planted.mkdir()
    give(planted, DELIVER_USER)
    with pytest.raises(RuntimeError, match="not a root-owned directory"):
        root_only_dir(planted / "runner")
    assert not (planted / "runner").exists()


def test_a_symlinked_or_writable_directory_is_refused(tmp: Path) -> None:
    (tmp / "elsewhere").mkdir()
    (tmp / "link").symlink_to(tmp / "elsewhere")
    with pytest.raises(RuntimeError):
        root_only_dir(tmp / "link")
    (tmp / "open").mkdir()
    os.chmod(tmp / "open", 0o777)
    with pytest.raises(RuntimeError):
        root_only_dir(tmp / "open" / "x")


def test_the_runner_cache_is_root_only() -> None:
    root_only_dir(RUNNER_CACHE)  # raises if anything on the way is not
    assert not str(RUNNER_CACHE).startswith(("/tmp", "/var/tmp"))


def test_an_existing_cluster_directory_is_refused(tmp: Path) -> None:
    (tmp / "pg").mkdir()  # e.g. a symlink or directory planted where the cluster would go
    with pytest.raises(FileExistsError):
        LocalPostgres(tmp / "pg").init()


def test_config_and_log_are_never_written_through_a_symlink(tmp: Path) -> None:
    victim = tmp / "victim"
    victim.write_text("root's file\n")
    for name in ("bombom.conf", "deliver.log"):
        base = tmp / name.split(".")[0]
        base.mkdir()
        (base / name).symlink_to(victim)
        with pytest.raises(OSError):
            delivery_files(base, "postgresql:///x")
    assert victim.read_text() == "root's file\n"
    assert victim.stat().st_uid == 0
