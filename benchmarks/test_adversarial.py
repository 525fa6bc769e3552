"""Adversarial inputs per heuristic (tests/bombs.py ADVERSARIAL): parse time at 1 MB and 20 MB
and the memory the 20 MB parse needs, each in a fresh child process. Figures only."""

from __future__ import annotations

from pathlib import Path

from tests.bombs import ADVERSARIAL
from tests.test_parse_adversarial import LARGE, SMALL, parse_in_child


def test_adversarial_parse_figures(tmp_path: Path) -> None:
    print(f"\n{'input':26s} {'1 MB':>8s} {'20 MB':>8s} {'ratio':>6s} {'memory':>8s}")
    for name, make in sorted(ADVERSARIAL.items()):
        small = parse_in_child(make(SMALL), tmp_path)
        large = parse_in_child(make(LARGE), tmp_path)
        ratio = large["seconds"] / max(small["seconds"], 1e-3)
        memory = (large["peak"] - large["before"]) / large["size"]
        print(f"{name:26s} {small['seconds']:7.2f}s {large['seconds']:7.2f}s {ratio:6.1f} "
              f"{memory:7.1f}x", flush=True)
