"""parse_message against nodemailer's mailparser on the same files, in one run (`make bench`).

The files: the shared corpus plus the tests' newsletters. Time is CPU time of the parsing
process (Python's process_time, Node's process.cpuUsage), after a warm-up of 20 files; each file
is parsed in REPS rounds and its least time kept, on both sides, so that other processes on the
machine count as little as possible. Ours starts each parse with its caches (URLs, style
declarations, style sheets, safe styles) empty: what a worker pays for a sender's first letter,
not what it pays when the same styles come again. mailparser is installed
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

from bombom_pipe.parse import ParseError, parse_message, sanitize, urls, visibility
from bombom_pipe.parse.html import analysed_prefix, cap_depth
from tests.conftest import corpus_files

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / ".node"
NEWSLETTERS = HERE.parent / "tests" / "data" / "newsletters" / "mails"
MAILPARSER = "mailparser@3"
REPS = 3


def files() -> list[Path]:
    return [p.resolve() for p in corpus_files() + sorted(NEWSLETTERS.rglob("*.eml"))]


def cpu_ms(raw: bytes) -> float:
    """CPU milliseconds of one parse_message, its caches empty."""
    for cache in (visibility.declarations, visibility.sheet, sanitize.safe_style, urls.public_url):
        cache.cache_clear()
    start = time.process_time()
    with contextlib.suppress(ParseError):
        parse_message(raw)
    return (time.process_time() - start) * 1000


def summary(times: list[float]) -> tuple[float, float, float]:
    """Total (s), median (ms), p95 (ms)."""
    return sum(times) / 1000, statistics.median(times), statistics.quantiles(times, n=20)[18]


def mailparser_times(paths: list[Path]) -> dict[str, list[float]] | str:
    """CPU ms per file under mailparser, in the first round and least over REPS, or why not."""
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
    r = subprocess.run([node, str(HERE / "mailparser.js"), str(REPS)],
                       input="\n".join(map(str, paths)), capture_output=True, text=True, env=env,
                       timeout=600)
    if r.returncode != 0:
        return f"mailparser run failed: {r.stderr.strip()[-300:]}"
    return json.loads(r.stdout)


def line(name: str, times: list[float]) -> str:
    total, median, p95 = summary(times)
    return (f"  {name:44s} {total:6.2f} s  median {median:5.2f} ms  p95 {p95:6.2f} ms  "
            f"max {max(times):6.1f} ms")


def test_parse_message_against_mailparser() -> None:
    import nh3
    from selectolax.lexbor import LexborHTMLParser

    paths = files()
    raws = [p.read_bytes() for p in paths]
    for raw in raws[:20]:
        cpu_ms(raw)
    rounds = [[cpu_ms(raw) for raw in raws] for _ in range(REPS)]
    ours = {"first": rounds[0], "least": [min(t) for t in zip(*rounds, strict=True)]}
    theirs = mailparser_times(paths)

    bodies = []  # (index, HTML body) of the messages with one
    for i, raw in enumerate(raws):
        with contextlib.suppress(ParseError):
            if html := parse_message(raw).html:
                bodies.append((i, html))
    floor = [1e9] * len(bodies)
    for _ in range(REPS):
        for i, (_, html) in enumerate(bodies):
            start = time.process_time()
            LexborHTMLParser(cap_depth(analysed_prefix(html)))
            nh3.clean(html)
            floor[i] = min(floor[i], (time.process_time() - start) * 1000)
    ours_html = [ours["least"][i] for i, _ in bodies]

    print(f"\nCPU time over {len(raws)} files (shared corpus + tests' newsletters):")
    print(line("parse_message, first round", ours["first"]))
    print(line(f"parse_message, least of {REPS} rounds", ours["least"]))
    if isinstance(theirs, str):
        print(theirs)
    else:
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        print(line(f"{MAILPARSER} (node {version.strip()}), first round", theirs["first"]))
        print(line(f"{MAILPARSER}, least of {REPS} rounds", theirs["least"]))
        for kind in ("first", "least"):
            (a, am, ap), (b, bm, bp) = summary(ours[kind]), summary(theirs[kind])
            print(f"  ours / mailparser, {kind:5s}: total {a / b:.2f}x, median {am / bm:.2f}x, "
                  f"p95 {ap / bp:.2f}x")
    multiple = sum(ours_html) / max(sum(floor), 1e-9)
    print(f"  floor (Lexbor parse + one nh3 pass) over the {len(bodies)} HTML bodies: "
          f"{sum(floor) / 1000:.2f} s; parse_message of those messages: "
          f"{sum(ours_html) / 1000:.2f} s = {multiple:.1f}x the floor")
