"""The documentation cites measurement records that exist, and the records are distinct files.

A citation is any `docs/measurements/...` path in README.md, docs/*.md or bench/README.md. A path that a
command is shown writing (after `--out` / `--output` inside a fenced code block, or after "writes") is a
destination, not a citation, and is not checked. `{a,b}` in a path is expanded as the shell does.
docs/measurements/README.md is the index: every record in the folder has a line there, and every path in its
tables exists. Records are compared byte for byte, including the members of the packed `runs.tar.xz`
archives, so that a copy can never stand in for a run that was not recorded.
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
from typing import Dict, Iterator, List, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASUREMENTS = os.path.join(REPO, "docs", "measurements")
INDEX = os.path.join(MEASUREMENTS, "README.md")

_PATH = re.compile(r"docs/measurements(?:/[A-Za-z0-9_.={},\-]*)*")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _expand_braces(path: str) -> List[str]:
    """Shell-style brace expansion without nesting: "a{1,2}b{x,y}" -> a1bx, a1by, a2bx, a2by."""
    match = re.search(r"\{([^{}]*)\}", path)
    if match is None:
        return [path]
    head, tail = path[: match.start()], path[match.end():]
    return [p for alt in match.group(1).split(",") for p in _expand_braces(head + alt + tail)]


def _doc_files() -> List[str]:
    docs = [os.path.join(REPO, "README.md"), os.path.join(REPO, "bench", "README.md")]
    docs_dir = os.path.join(REPO, "docs")
    docs += sorted(os.path.join(docs_dir, n) for n in os.listdir(docs_dir) if n.endswith(".md"))
    return [d for d in docs if os.path.isfile(d)]


def cited_paths(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, path) of every measurement path the text cites, destinations left out."""
    in_code = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        for match in _PATH.finditer(line):
            before = line[: match.start()]
            if re.search(r"\bwrites?\s+`?$", before, re.IGNORECASE):
                continue
            if in_code and re.search(r"(?:--out|--output)\s+$", before):
                continue
            raw = match.group(0).rstrip(".,:;")
            for path in _expand_braces(raw):
                yield number, path


def test_cited_paths_parse_as_intended():
    text = (
        "see `docs/measurements/model_speed/both_run{3,4}.json`, and docs/measurements/init_scales.json.\n"
        "```\npython bench/x.py --out docs/measurements/new.json\n```\n"
        "Writes `docs/measurements/attribution/attribution.json`.\n"
        "inline `python bench/x.py --out docs/measurements/cited.json`\n"
    )
    assert list(cited_paths(text)) == [
        (1, "docs/measurements/model_speed/both_run3.json"),
        (1, "docs/measurements/model_speed/both_run4.json"),
        (1, "docs/measurements/init_scales.json"),
        (6, "docs/measurements/cited.json"),
    ]


@pytest.mark.parametrize("doc", _doc_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_every_cited_record_exists(doc):
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    missing = [f"line {n}: {p}" for n, p in cited_paths(text) if not os.path.exists(os.path.join(REPO, p))]
    assert not missing, f"{os.path.relpath(doc, REPO)} cites records that do not exist: {missing}"


@pytest.mark.parametrize(
    "doc",
    [os.path.join(REPO, "README.md"), INDEX]
    + sorted(os.path.join(REPO, "docs", n) for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md")),
    ids=lambda p: os.path.relpath(p, REPO),
)
def test_relative_links_resolve(doc):
    """Markdown links of the user-facing pages point at files that exist (anchors are not checked)."""
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = target.split("#", 1)[0]
        if not os.path.exists(os.path.join(os.path.dirname(doc), path)):
            broken.append(target)
    assert not broken, f"{os.path.relpath(doc, REPO)} links to missing files: {broken}"


def _index_entries() -> List[str]:
    """Paths (relative to docs/measurements) in the first column of the index's tables."""
    entries = []
    with open(INDEX, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("| `"):
                continue
            first_cell = line.split("|")[1]
            for token in re.findall(r"`([^`]+)`", first_cell):
                entries.extend(_expand_braces(token))
    return entries


def _records() -> List[str]:
    out = []
    for root, _, files in os.walk(MEASUREMENTS):
        for name in files:
            path = os.path.relpath(os.path.join(root, name), MEASUREMENTS)
            if path != "README.md":
                out.append(path.replace(os.sep, "/"))
    return sorted(out)


def test_index_lists_every_record_and_only_existing_ones():
    entries = _index_entries()
    assert len(entries) > 20, "the index's tables were not parsed (expected one line per record)"
    missing = sorted(e for e in entries if not os.path.exists(os.path.join(MEASUREMENTS, e)))
    assert not missing, f"docs/measurements/README.md lists records that do not exist: {missing}"
    unlisted = sorted(set(_records()) - set(entries))
    assert not unlisted, f"records without a line in docs/measurements/README.md: {unlisted}"


def test_record_names_are_short():
    long_names = [p for p in _records() if len("docs/measurements/" + p) >= 80]
    assert not long_names, f"record paths of 80 characters or more: {long_names}"


def _record_digests() -> Iterator[Tuple[str, str]]:
    for rel in _records():
        path = os.path.join(MEASUREMENTS, rel)
        with open(path, "rb") as f:
            yield rel, hashlib.sha256(f.read()).hexdigest()
        if rel.endswith((".tar.xz", ".tar.gz", ".tar")):
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        data = archive.extractfile(member).read()
                        yield f"{rel}:{member.name}", hashlib.sha256(data).hexdigest()


def test_no_two_records_are_identical():
    seen: Dict[str, str] = {}
    duplicates = []
    for name, digest in _record_digests():
        if digest in seen:
            duplicates.append((seen[digest], name))
        else:
            seen[digest] = name
    assert len(seen) > 50, "too few records found: the walk or the archives were not read"
    assert not duplicates, f"byte-identical records: {duplicates}"
