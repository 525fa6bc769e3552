"""The README's first command: `bombom demo` (what `make demo` runs) works end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_stores_the_samples_and_shows_the_duplicate() -> None:
    base = Path(tempfile.mkdtemp(prefix="bombom-demo-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        r = subprocess.run([sys.executable, "-m", "bombom_pipe.admin", "demo", "--dir",
                            str(base)], capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("exit 0  2.0.0 stored article") == 3, r.stdout
    assert "exit 0  2.0.0 duplicate article 1" in r.stdout
    assert "subject: 봄봄 위클리 42호: 똠양꿍과 햏" in r.stdout
    assert "stored: 3" in r.stdout and "duplicate: 1" in r.stdout
