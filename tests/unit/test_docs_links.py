"""Every relative link of the project's documents leads to a file of the repository (and to
a heading of it, when it names one); the README links nowhere outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import PROJECT_ROOT

DOCUMENTS = sorted(
    [PROJECT_ROOT / name for name in ("README.md", "CONTRIBUTING.md", "SECURITY.md")]
    + [PROJECT_ROOT / "CHANGELOG.md"]
    + list((PROJECT_ROOT / "docs").glob("*.md"))
)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^(?:https?|mailto):", re.IGNORECASE)


def links(text: str) -> list[str]:
    """The targets of a markdown text's links, leaving out code blocks and code spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return INLINE.findall(prose) + REFERENCE.findall(prose)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def _cases() -> list[object]:
    cases: list[object] = []
    for document in DOCUMENTS:
        if not document.exists():
            continue
        name = document.relative_to(PROJECT_ROOT).as_posix()
        for target in dict.fromkeys(links(document.read_text(encoding="utf-8"))):
            if EXTERNAL.match(target):
                continue
            cases.append(pytest.param(document, target, id=f"{name} -> {target}"))
    return cases


def test_the_documents_exist_and_link_each_other() -> None:
    assert all(document.exists() for document in DOCUMENTS), DOCUMENTS
    readme = links((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"))
    for page in ("docs/api.md", "docs/configuration.md", "CONTRIBUTING.md", "LICENSE"):
        assert page in readme


@pytest.mark.parametrize(("document", "target"), _cases())
def test_relative_link_resolves_inside_the_repository(document: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (document.parent / path).resolve() if path else document
    assert resolved.is_relative_to(PROJECT_ROOT), f"{target} leads outside the repository"
    assert resolved.exists(), f"{target}: no such file"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved.read_text(encoding="utf-8")), (
            f"{target}: no heading with that anchor"
        )


def test_the_readme_links_nowhere_outside_the_repository() -> None:
    for target in links((PROJECT_ROOT / "README.md").read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        resolved = (PROJECT_ROOT / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(PROJECT_ROOT), target


def test_the_link_reader_finds_what_it_must() -> None:
    text = (
        "See [a](docs/a.md#x), [b][ref] and ![img](pic.png).\n\n[ref]: ../outside.md\n"
        "`[not](code.md)` and\n```\n[nor](fenced.md)\n```\n## Services: OAuth 2.0 here\n"
    )
    assert sorted(links(text)) == ["../outside.md", "docs/a.md#x", "pic.png"]
    assert "services-oauth-20-here" in anchors(text)
