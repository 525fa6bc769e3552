"""The README's first command: `make demo` (`python -m tests.demo`) works end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_stores_the_samples_and_shows_the_duplicate() -> None:
    r = subprocess.run([sys.executable, "-m", "tests.demo"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("exit 0  2.0.0 stored article") == 3, r.stdout
    assert "exit 0  2.0.0 duplicate article 1" in r.stdout
    assert "subject: 봄봄 위클리 42호: 똠양꿍과 햏" in r.stdout
    assert "stored: 3" in r.stdout and "duplicate: 1" in r.stdout
    base = r.stdout.split("PostgreSQL in ", 1)[1].split()[0]
    assert not Path(base).parent.exists(), "the demo's directory was left behind"


def test_demo_is_not_part_of_the_installed_command() -> None:
    r = subprocess.run([sys.executable, "-m", "bombom_pipe.admin", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and " demo " not in r.stdout
