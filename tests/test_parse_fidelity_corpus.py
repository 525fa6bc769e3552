"""Newsletter fidelity measured on real newsletters against what a reader expects.

Two sets of expectations for the shared corpus's newsletters (tests/data/newsletters, see its
README): expectations.toml, written from each mail's source and corrected after comparison,
and expectations-blind.toml, written later from the sources alone without seeing the first
file or the parser's output. And the project's own set (expectations-own.toml, the mails under
tests/data/newsletters/mails/), measured per language. Prints accuracy per field against each
and keeps it from falling below the measured floor. The own set's held-out letters
(`heldout = true`, taken after the fixes they would measure were made) are printed as their
own figure and have no floor: they measure, they do not gate."""

from __future__ import annotations

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
FLOOR = {"preview": 1.0, "thumbnail": 1.0, "web_version": 1.0, "unsubscribe": 0.97}
BLIND_FLOOR = {"preview": 0.97, "thumbnail": 1.0, "web_version": 1.0, "unsubscribe": 1.0}
# Per language of the own set, held-out letters left out; a language without a floor fails the
# test, so each one added to the set comes with the figures measured on it.
OWN_FLOOR = {
    "de": {"preview": 1.0, "thumbnail": 1.0, "web_version": 1.0, "unsubscribe": 1.0},
    # measured 9/10, 2/3, 10/10, 10/10 (before the Korean fixes: 4/10, 2/3, 8/10, 10/10)
    "ko": {"preview": 0.9, "thumbnail": 0.66, "web_version": 1.0, "unsubscribe": 1.0},
}
FIELDS = tuple(FLOOR)

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")


def _thumbnail(m: ParsedMessage, expected: str) -> bool:
    if expected.startswith("cid:"):
        cid = expected[4:]
        sha = next((a.sha256 for a in m.attachments if a.content_id == cid), None)
        return sha is not None and m.thumbnail_url is not None and sha in m.thumbnail_url
    return _prefix(m.thumbnail_url, expected)


def _prefix(got: str | None, expected: str) -> bool:
    return got is None if expected == "" else bool(got and got.startswith(expected))


def judge(m: ParsedMessage, expected: dict) -> dict[str, bool | None]:
    """Per field: True/False, or None where the expectation is unknown ("?")."""
    u = m.unsubscribe
    return {
        "preview": (m.preview is None if not expected["preview"]
                    else any((m.preview or "").startswith(p) for p in expected["preview"])),
        "thumbnail": None if expected["thumbnail"] == "?" else _thumbnail(m, expected["thumbnail"]),
        "web_version": _prefix(m.web_version_url, expected["web_version"]),
        "unsubscribe": _prefix(u.http or u.mailto, expected["unsubscribe"]),
    }


def measure(mails: list[dict], label: str, root: Path = CORPUS
            ) -> tuple[dict[str, float], list[str]]:
    """Accuracy per field over `mails` (files under `root`), printed with the misses."""
    results: dict[str, list[bool]] = {f: [] for f in FIELDS}
    misses: list[str] = []
    for expected in mails:
        m = parse_message((root / expected["file"]).read_bytes())
        for name, ok in judge(m, expected).items():
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
def test_accuracy_against_expectations() -> None:
    accuracy, misses = measure(MAILS, EXPECTATIONS.name)
    assert all(accuracy[f] >= FLOOR[f] for f in FIELDS), (accuracy, misses)


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
    read, parsed or judged, or if one would also count towards the tuned set's floors."""
    assert HELD_OUT, "no held-out letters"
    assert not {m["file"] for m in HELD_OUT} & {m["file"] for m in OWN_MAILS}
    assert all(m["heldout"] is True and m["lang"] for m in HELD_OUT)
    for lang in sorted({m["lang"] for m in HELD_OUT}):
        mails = [m for m in HELD_OUT if m["lang"] == lang]
        accuracy, _ = measure(mails, f"{OWN.name} [{lang}, held out]", DATA)
        assert set(accuracy) == set(FIELDS)
