"""The README and docs/ hold together: every link reaches a file, and every #anchor a heading.

The README gets a newcomer running and links to one document per subject under docs/;
a moved or renamed section must not leave a link dangling. Links to other sites are not
fetched (the tests run offline); their shape is all that is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from servers import ROOT

DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "tests" / "fixtures" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)
# [text](target) and ![alt](target); the target up to a space or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def links(document: Path) -> list[str]:
    """The link targets of a Markdown file, outside its code blocks."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return LINK.findall(text)


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation but `-` and `_`
    dropped, each space a hyphen."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """The anchors of every heading of a Markdown file."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return {slug(match) for match in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_the_slug_is_githubs() -> None:
    assert (
        slug("Recommended settings: `--workers 2 --threads 16` (gthread)")
        == "recommended-settings---workers-2---threads-16-gthread"
    )
    assert slug("Set-up: two commands") == "set-up-two-commands"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_reaches_its_file_and_heading(document: Path) -> None:
    broken = []
    for target in links(document):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            assert target.startswith(("https://", "http://", "mailto:")), target
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no such heading in {path.name}")
    assert not broken, f"{document.name}: " + "; ".join(broken)


def test_the_readme_links_every_document_under_docs() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links(ROOT / "README.md")
    }
    for document in (ROOT / "docs").glob("*.md"):
        assert document.resolve() in linked, f"README.md does not link {document.name}"


def test_the_readme_stays_short() -> None:
    """What gets a newcomer running; the rest is one link away."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 440


def test_the_code_names_only_documents_that_exist() -> None:
    """Docstrings and messages point at docs/*.md files: each must be there."""
    named = set()
    for source in ROOT.glob("*.py"):
        named |= set(re.findall(r"docs/[\w-]+\.md", source.read_text(encoding="utf-8")))
    assert named, "the code names no document at all?"
    for name in sorted(named):
        assert (ROOT / name).exists(), name
