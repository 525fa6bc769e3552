"""parse_message against nodemailer's mailparser on the same files, in one run (`make bench`).

The files: the shared corpus plus the tests' newsletters. Time is CPU time of the parsing
process (Python's process_time, Node's process.cpuUsage), each file parsed once after a warm-up
of 20, so that load from other processes on the machine does not count. mailparser is installed
with npm into benchmarks/.node (gitignored) when node and npm are present; otherwise only our
figures are printed. The floor: the chosen tree parser (Lexbor, through selectolax) plus one
nh3 pass, alone, over the same HTML bodies. Figures, not assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from bombom_pipe.parse import ParseError, parse_message
from bombom_pipe.parse.html import analysed_prefix, cap_depth
from tests.conftest import corpus_files

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / ".node"
NEWSLETTERS = HERE.parent / "tests" / "data" / "newsletters" / "mails"
MAILPARSER = "mailparser@3"


def files() -> list[Path]:
    return [p.resolve() for p in corpus_files() + sorted(NEWSLETTERS.rglob("*.eml"))]


def cpu_ms(raw: bytes) -> float:
    """CPU milliseconds of one parse_message."""
    start = time.process_time()
    with contextlib.suppress(ParseError):
        parse_message(raw)
    return (time.process_time() - start) * 1000


def summary(times: list[float]) -> tuple[float, float, float]:
    """Total (s), median (ms), p95 (ms)."""
    return sum(times) / 1000, statistics.median(times), statistics.quantiles(times, n=20)[18]


def mailparser_times(paths: list[Path]) -> list[float] | str:
    """CPU ms per file under mailparser, or why there are none."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node and npm are not installed: mailparser not measured"
    if not (NODE_DIR / "node_modules" / "mailparser").is_dir():
        NODE_DIR.mkdir(exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund",
                            "--silent", MAILPARSER], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return f"npm install {MAILPARSER} failed: {r.stderr.strip()[-300:]}"
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
    r = subprocess.run([node, str(HERE / "mailparser.js")], input="\n".join(map(str, paths)),
                       capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        return f"mailparser run failed: {r.stderr.strip()[-300:]}"
    return json.loads(r.stdout)


def test_parse_message_against_mailparser() -> None:
    import nh3
    from selectolax.lexbor import LexborHTMLParser

    paths = files()
    raws = [p.read_bytes() for p in paths]
    for raw in raws[:20]:
        cpu_ms(raw)
    ours = [cpu_ms(raw) for raw in raws]
    theirs = mailparser_times(paths)

    bodies = []  # (index, HTML body) of the messages with one
    for i, raw in enumerate(raws):
        with contextlib.suppress(ParseError):
            if html := parse_message(raw).html:
                bodies.append((i, html))
    floor = []
    for _, html in bodies:
        start = time.process_time()
        LexborHTMLParser(cap_depth(analysed_prefix(html)))
        nh3.clean(html)
        floor.append((time.process_time() - start) * 1000)
    ours_html = [ours[i] for i, _ in bodies]

    total, median, p95 = summary(ours)
    print(f"\nparse_message over {len(raws)} files (shared corpus + tests' newsletters), CPU: "
          f"{total:.2f} s, median {median:.2f} ms, p95 {p95:.2f} ms, max {max(ours):.1f} ms")
    if isinstance(theirs, str):
        print(theirs)
    else:
        m_total, m_median, m_p95 = summary(theirs)
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        print(f"{MAILPARSER} (node {version.strip()}) on the same files, CPU: {m_total:.2f} s, "
              f"median {m_median:.2f} ms, p95 {m_p95:.2f} ms, max {max(theirs):.1f} ms")
        print(f"ours / mailparser: total {total / m_total:.2f}x, median {median / m_median:.2f}x, "
              f"p95 {p95 / m_p95:.2f}x")
    multiple = sum(ours_html) / max(sum(floor), 1e-9)
    print(f"floor (Lexbor parse + one nh3 pass) over the {len(bodies)} HTML bodies: "
          f"{sum(floor) / 1000:.2f} s; parse_message of those messages: "
          f"{sum(ours_html) / 1000:.2f} s = {multiple:.1f}x the floor")
