"""Every `§` citation in the repository names a section of docs/algorithms.md (or of the doc it
names) that exists, and no file refers to documents outside the repository: the citations in
comments cannot go stale silently."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCANNED = ("src", "include", "python", "tests", "bench", "docs", "scripts", "cmake")
SCANNED_FILES = ("CMakeLists.txt", "README.md", "pyproject.toml")
SUFFIXES = {".cpp", ".hpp", ".h", ".c", ".cc", ".py", ".md", ".txt", ".cmake", ".toml", ".sh", ""}

# §4.6, §4.6b, §4.6 (b), §4.11 c, §3.3 S5, §4.1-4.4 (b), §4.5-§4.7, §4.10, "Causal depthwise conv1d"
SECTION = r"(\d+(?:\.\d+)*)"
CITATION = re.compile(
    SECTION + r"(?:\s*-\s*§?" + SECTION + r")?"
    r"(?:\s?\(?([a-e])\)?(?![A-Za-z]))?"
    r"(?:\s(S\d)\b)?"
    r"(?:,\s*\"([^\"]+)\")?")
DOC_NAME = re.compile(r"([A-Za-z0-9_./-]+\.md)\b")


def text_files():
    paths = [ROOT / name for name in SCANNED_FILES if (ROOT / name).exists()]
    for top in SCANNED:
        paths += sorted(p for p in (ROOT / top).rglob("*") if p.is_file())
    for path in paths:
        if path.suffix not in SUFFIXES or "__pycache__" in path.parts:
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def sections(doc: pathlib.Path) -> dict[str, str]:
    """Section number -> the text of that section (its heading to the next heading of the same or
    a higher level)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    headings = [(i, len(m.group(1)), m.group(2)) for i, line in enumerate(lines)
                if (m := re.match(r"(#+)\s+(\d+(?:\.\d+)*)\.?\s", line))]
    out = {}
    for n, (i, level, number) in enumerate(headings):
        end = next((j for j, lv, _ in headings[n + 1:] if lv <= level), len(lines))
        out[number] = "\n".join(lines[i:end])
    return out


def citations():
    """(file:line, doc, section, part, rule, title) for every § in the repository."""
    for path, text in text_files():
        if path == pathlib.Path(__file__):
            continue
        lines = text.splitlines()
        for number, line in enumerate(lines):
            for mark in re.finditer("§", line):
                # The doc is the last one named before the § on this line or the line before;
                # code comments name none or algorithms.md.
                before = (lines[number - 1] if number else "") + "\n" + line[:mark.start()]
                named = DOC_NAME.findall(before)
                doc = pathlib.Path(named[-1]).name if named else "algorithms.md"
                m = CITATION.match(line, mark.end())
                where = f"{path.relative_to(ROOT)}:{number + 1}"
                if not m:
                    yield where, doc, None, None, None, None
                    continue
                first, last, part, rule, title = m.groups()
                for section in (first, last) if last else (first,):
                    yield where, doc, section, part, rule, title


def problem(doc_sections: dict[str, str], doc, section, part, rule, title) -> str | None:
    """Why a citation does not resolve in a doc split by sections(), or None if it does."""
    body = doc_sections.get(section) if section else None
    if body is None:
        return f"§{section} is not a section of docs/{doc}"
    if part and not re.search(rf"\*\*\({part}\)", body):
        return f"§{section} of docs/{doc} has no part ({part})"
    if rule and not re.search(rf"\*\*{rule}\b", body):
        return f"§{section} of docs/{doc} has no rule {rule}"
    if title and f"**{title}" not in body:
        return f"§{section} of docs/{doc} has no part \"{title}\""
    return None


def test_every_section_citation_resolves():
    docs: dict[str, dict[str, str]] = {}
    found, broken = 0, []
    for where, doc, section, part, rule, title in citations():
        found += 1
        if doc not in docs:
            docs[doc] = sections(DOCS / doc) if (DOCS / doc).exists() else {}
        if why := problem(docs[doc], doc, section, part, rule, title):
            broken.append(f"{where}: {why}")
    assert found > 100, f"only {found} citations found: is the scan broken?"
    assert not broken, "\n".join(broken)


def test_documents_named_are_in_the_repository():
    missing = []
    for path, text in text_files():
        if path == pathlib.Path(__file__):
            continue
        for number, line in enumerate(text.splitlines()):
            if re.search(r"\.\./shared|/work/shared", line):
                missing.append(f"{path.relative_to(ROOT)}:{number + 1}: refers outside the repository")
            for name in DOC_NAME.findall(line):
                if name.startswith("docs/") or name.startswith("../"):
                    candidates = [ROOT / name]
                else:  # a bare name: a doc of docs/ or a top-level file
                    candidates = [DOCS / pathlib.Path(name).name, ROOT / pathlib.Path(name).name]
                if not any(c.exists() for c in candidates):
                    missing.append(f"{path.relative_to(ROOT)}:{number + 1}: {name} does not exist")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("citation, ok", [
    ("§4.6b", True), ("§4.11 c", True), ("§3.3 S5", True), ("§4.1-4.4 (b)", True),
    ("§4.10, \"Causal depthwise conv1d\"", True), ("§9.9", False), ("§4.6 (e)", False),
    ("§3.3 S9", False), ("§4.10, \"No such part\"", False)])
def test_the_checker_fails_on_a_bad_citation(citation, ok):
    first, last, part, rule, title = CITATION.match(citation, 1).groups()
    body = sections(DOCS / "algorithms.md")
    assert all(problem(body, "algorithms.md", s, part, rule, title) is None
               for s in (first, last) if s) == ok
