"""Hostile input costs time and memory in proportion to its size.

Every parse heuristic meets adversarial messages of 1 MB and 20 MB (``tests/bombs.py``
ADVERSARIAL: one generator per loop or pattern over untrusted text). A quadratic step makes 20x
the input cost ~400x the time; the check allows 40x, plus a floor for very fast runs and the
delivery deadline as a ceiling, so a loaded machine does not make it flake. Each parse runs in
a child process (a regex holds the GIL: only a kill stops it), which also reports its peak
memory. The figures themselves are printed by ``make bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bombs import ADVERSARIAL

SMALL, LARGE = 1_000_000, 20_000_000
RATIO = 40  # allowed time(LARGE) / time(SMALL): linear is ~20, quadratic ~400
FLOOR = 0.25  # seconds: a SMALL parse faster than this counts as this long
CEILING = 60.0  # seconds: the delivery deadline
MEMORY_RATIO = 10  # memory a parse needs over the message size: a few copies, not one per level
NESTED_MEMORY_RATIO = 5

# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
CHILD = """
import json, re, sys, time
from pathlib import Path
from bombom_pipe.parse import ParseError, parse_message

def peak():
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1)) * 1024

parse_message(b"From: a@b.example\\r\\nSubject: warm\\r\\n\\r\\n<p>x</p>\\r\\n")
before = peak()
raw = Path(sys.argv[1]).read_bytes()
start = time.process_time()  # CPU, not wall-clock: a loaded machine must not fail the ratio
try:
    parse_message(raw)
except ParseError:
    pass
print(json.dumps({"seconds": time.process_time() - start, "size": len(raw),
                  "before": before, "peak": peak()}))
"""


def parse_in_child(raw: bytes, tmp_path: Path) -> dict:
    """Parse in a fresh interpreter; CPU seconds, size, RSS before reading the input, peak RSS."""
    path = tmp_path / "message.eml"
    path.write_bytes(raw)
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                           timeout=CEILING + 30, cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        pytest.fail(f"parsing {len(raw)} bytes did not finish in {CEILING + 30:.0f} s")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return json.loads(r.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_time_and_memory_grow_linearly(name: str, tmp_path: Path) -> None:
    make = ADVERSARIAL[name]
    small = min(parse_in_child(make(SMALL), tmp_path)["seconds"] for _ in range(2))
    large = parse_in_child(make(LARGE), tmp_path)
    assert large["seconds"] < CEILING, f"{name}: {large['seconds']:.1f} s at 20 MB"
    assert large["seconds"] <= RATIO * max(small, FLOOR), (
        f"{name}: {small:.2f} s at 1 MB, {large['seconds']:.2f} s at 20 MB: super-linear"
    )
    used = large["peak"] - large["before"]  # the message read in, and everything parsing takes
    assert used <= MEMORY_RATIO * large["size"], (
        f"{name}: parsing {large['size'] / 1e6:.1f} MB took {used / 1e6:.0f} MB more memory"
    )


def test_nested_messages_are_decoded_once(tmp_path: Path) -> None:
    """38 embedded messages around one body: one regenerated copy, not one per level."""
    raw = ADVERSARIAL["nested_messages"](LARGE)
    large = parse_in_child(raw, tmp_path)
    assert large["peak"] - large["before"] <= NESTED_MEMORY_RATIO * len(raw)
    assert large["seconds"] < CEILING


@pytest.mark.parametrize("unit", [b"=?", b"a@", b"."])
def test_address_fields_cost_grows_linearly_up_to_their_cap(unit: bytes, tmp_path: Path) -> None:
    """24 address fields (From, Sender, ..., 20 To) full of address-like garbage: 16x longer
    fields (up to the 16 KB cap) may cost 16x the time, not 256x."""

    def message(size: int) -> bytes:
        names = [b"From", b"Sender", b"X-Original-To", b"Delivered-To"] + [b"To"] * 20
        value = unit * (size // len(unit))
        return (b"".join(name + b": " + value + b"\r\n" for name in names)
                + b"Subject: addresses\r\n\r\nbody\r\n")

    small = min(parse_in_child(message(1024), tmp_path)["seconds"] for _ in range(2))
    large = parse_in_child(message(16 * 1024), tmp_path)["seconds"]
    assert large <= RATIO * max(small, FLOOR / 10), f"{unit!r}: {small:.3f} s, then {large:.2f} s"
