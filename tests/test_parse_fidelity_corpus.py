"""Newsletter fidelity measured on real newsletters against what a reader expects.

Two sets of expectations for the shared corpus's newsletters (tests/data/newsletters, see its
README): expectations.toml, written from each mail's source and corrected after comparison with
the parser's output, so it is measured and printed but sets no floor; and
expectations-blind.toml, written later from the sources alone without seeing the first file or
the parser's output, which does. And the project's own set (expectations-own.toml, the mails
under tests/data/newsletters/mails/, expectations written before the parser ran on each),
measured per language with a floor. Its held-out letters (`heldout = true`, mails/heldout/,
never used for a fix) are printed as their own figure and have no floor: they measure, they do
not gate. Links of de-identified letters are judged by their visible text (`numbered`)."""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path

import pytest

from bombom_pipe.parse import ParsedMessage, parse_message

from .conftest import CORPUS

DATA = Path(__file__).parent / "data" / "newsletters"
EXPECTATIONS = DATA / "expectations.toml"
BLIND = DATA / "expectations-blind.toml"
OWN = DATA / "expectations-own.toml"
MAILS = tomllib.loads(EXPECTATIONS.read_text("utf-8"))["mail"]
BLIND_MAILS = tomllib.loads(BLIND.read_text("utf-8"))["mail"]
OWN_ALL = tomllib.loads(OWN.read_text("utf-8"))["mail"]
OWN_MAILS = [m for m in OWN_ALL if not m.get("heldout")]
HELD_OUT = [m for m in OWN_ALL if m.get("heldout")]
FIELDS = ("preview", "thumbnail", "web_version", "unsubscribe")
# measured 37/38, 36/36, 38/38, 38/38
BLIND_FLOOR = {"preview": 0.97, "thumbnail": 1.0, "web_version": 1.0, "unsubscribe": 1.0}
# Per language of the own set, held-out letters left out; a language without a floor fails the
# test, so each one added to the set comes with the figures measured on it.
OWN_FLOOR = {
    "de": {"preview": 1.0, "thumbnail": 1.0, "web_version": 1.0, "unsubscribe": 1.0},
    # 13 letters (the ten the Korean fixes were made on, and the three that were held out
    # until their misses drove more fixes): measured 11/13, 2/3, 13/13, 13/13, links judged by
    # their visible text
    "ko": {"preview": 0.84, "thumbnail": 0.66, "web_version": 1.0, "unsubscribe": 1.0},
}

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


def _thumbnail(m: ParsedMessage, expected: str) -> bool:
    if expected.startswith("cid:"):
        cid = expected[4:]
        sha = next((a.sha256 for a in m.attachments if a.content_id == cid), None)
        return sha is not None and m.thumbnail_url is not None and sha in m.thumbnail_url
    return _prefix(m.thumbnail_url, expected)


def _prefix(got: str | None, expected: str) -> bool:
    return got is None if expected == "" else bool(got and got.startswith(expected))


def _link(got: str | None, expected: str | list[str], texts: dict[str, set[str]]) -> bool:
    """`expected`: a URL prefix ("" = none), or a list of alternatives, each a URL prefix or
    "text:<the link's visible text>" (looked up in `texts`: href -> visible texts)."""
    if isinstance(expected, str):
        return _prefix(got, expected)
    return any(got is not None and alt.removeprefix("text:") in texts.get(got, set())
               if alt.startswith("text:") else _prefix(got, alt) for alt in expected)


PLACEHOLDER = re.compile(r"""href=(["'])https://example\.com/?\1""")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def numbered(raw: bytes) -> tuple[bytes, dict[str, set[str]]]:
    """For a de-identified letter (one base64 text/html part, every href https://example.com),
    the same letter with its placeholder hrefs numbered (https://example.com/link-1, -2, ...) so
    that the link the parser took can be told from the others; and every href's visible texts,
    read plainly with BeautifulSoup, not with the parser."""
    from bs4 import BeautifulSoup

    end = _HEADER_END.search(raw)
    assert end, "no header block"
    head, body = raw[:end.end()], raw[end.end():]
    base64_body = re.search(rb"(?im)^content-transfer-encoding:\s*base64", head) is not None
    html = (base64.b64decode(body) if base64_body else body).decode("utf-8")
    count = iter(range(1, 1 << 20))
    html = PLACEHOLDER.sub(lambda m: f'href={m[1]}https://example.com/link-{next(count)}{m[1]}',
                           html)
    texts: dict[str, set[str]] = {}
    for a in BeautifulSoup(html, "html.parser").find_all("a", href=True):
        texts.setdefault(a["href"], set()).add(" ".join(a.get_text(" ").split()))
    data = html.encode("utf-8")
    return head + (base64.encodebytes(data) if base64_body else data), texts


def judge(m: ParsedMessage, expected: dict, texts: dict[str, set[str]] | None = None
          ) -> dict[str, bool | None]:
    """Per field: True/False, or None where the expectation is unknown ("?")."""
    u = m.unsubscribe
    texts = texts or {}
    return {
        "preview": (m.preview is None if not expected["preview"]
                    else any((m.preview or "").startswith(p) for p in expected["preview"])),
        "thumbnail": None if expected["thumbnail"] == "?" else _thumbnail(m, expected["thumbnail"]),
        "web_version": _link(m.web_version_url, expected["web_version"], texts),
        "unsubscribe": _link(u.http or u.mailto, expected["unsubscribe"], texts),
    }


def measure(mails: list[dict], label: str, root: Path = CORPUS
            ) -> tuple[dict[str, float], list[str]]:
    """Accuracy per field over `mails` (files under `root`), printed with the misses."""
    results: dict[str, list[bool]] = {f: [] for f in FIELDS}
    misses: list[str] = []
    for expected in mails:
        raw, texts = (root / expected["file"]).read_bytes(), None
        if any(isinstance(expected[f], list) for f in ("web_version", "unsubscribe")):
            raw, texts = numbered(raw)
        m = parse_message(raw)
        for name, ok in judge(m, expected, texts).items():
            if ok is None:
                continue
            results[name].append(ok)
            if not ok:
                misses.append(f"{expected['file']} {name}")
    print(f"\nnewsletter fidelity against {label} over", len(mails), "mails: " + ", ".join(
        f"{f} {sum(results[f])}/{len(results[f])}" for f in FIELDS))
    print("misses:", *misses, sep="\n  ")
    return {f: sum(r) / len(r) if r else 1.0 for f, r in results.items()}, misses


@needs_corpus
@pytest.mark.parametrize("mails", [MAILS, BLIND_MAILS], ids=[EXPECTATIONS.name, BLIND.name])
def test_expectations_cover_the_corpus_newsletters(mails: list[dict]) -> None:
    manifest = (CORPUS / "MANIFEST.tsv").read_text("utf-8").splitlines()[1:]
    newsletters = {row.split("\t")[0] for row in manifest if row.split("\t")[5] == "newsletter"}
    assert sorted(m["file"] for m in mails) == sorted(newsletters)


@needs_corpus
def test_accuracy_against_expectations_is_measured_not_gated() -> None:
    """Printed only: this file was corrected after comparison with the parser's output, so a
    floor on it would be a floor on agreeing with the parser. Fails only if a mail cannot be
    read, parsed or judged."""
    accuracy, _ = measure(MAILS, EXPECTATIONS.name)
    assert set(accuracy) == set(FIELDS)


@needs_corpus
def test_accuracy_against_blind_expectations() -> None:
    accuracy, misses = measure(BLIND_MAILS, BLIND.name)
    assert all(accuracy[f] >= BLIND_FLOOR[f] for f in FIELDS), (accuracy, misses)


def test_own_expectations_cover_the_own_mails() -> None:
    on_disk = {p.relative_to(DATA).as_posix() for p in (DATA / "mails").rglob("*.eml")}
    files = [m["file"] for m in OWN_ALL]
    assert len(set(files)) == len(files)
    assert sorted(set(files) ^ on_disk) == []


def test_accuracy_own_set() -> None:
    measure(OWN_MAILS, OWN.name, DATA)
    for lang in sorted({m["lang"] for m in OWN_MAILS}):
        mails = [m for m in OWN_MAILS if m["lang"] == lang]
        accuracy, misses = measure(mails, f"{OWN.name} [{lang}]", DATA)
        assert lang in OWN_FLOOR, f"no floor for {lang}: {accuracy}"
        assert all(accuracy[f] >= OWN_FLOOR[lang][f] for f in FIELDS), (lang, accuracy, misses)


def test_held_out_set_is_measured_not_gated() -> None:
    """The held-out figure, per field, printed; no floor. Fails only if a held-out letter cannot be
    read, parsed or judged, or if one would also count towards the tuned set's floors. Held-out
    letters live in mails/heldout/ and nowhere else: a letter that drove a fix moves out."""
    assert HELD_OUT, "no held-out letters"
    assert not {m["file"] for m in HELD_OUT} & {m["file"] for m in OWN_MAILS}
    assert all(m["heldout"] is True and m["lang"] for m in HELD_OUT)
    assert all(m["file"].startswith("mails/heldout/") for m in HELD_OUT)
    assert not [m["file"] for m in OWN_MAILS if m["file"].startswith("mails/heldout/")]
    for lang in sorted({m["lang"] for m in HELD_OUT}):
        mails = [m for m in HELD_OUT if m["lang"] == lang]
        accuracy, _ = measure(mails, f"{OWN.name} [{lang}, held out]", DATA)
        assert set(accuracy) == set(FIELDS)
