"""Every relative link in README.md and docs/*.md points at a file that exists and, with a
``#fragment``, at a heading that file has (GitHub's anchors), so moving a section between
pages cannot leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for match in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_slug_is_githubs() -> None:
    assert slug("3b. Search quality on real audio (issue 22, 2026-12-07)") == (
        "3b-search-quality-on-real-audio-issue-22-2026-12-07"
    )
    assert (
        slug("The compact index: `--type bit` (issue 14)")
        == "the-compact-index---type-bit-issue-14"
    )


def dead_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or heading does not exist."""
    dead = []
    for match in LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            dead.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            dead.append(f"{target}: no heading with that anchor in {dest.name}")
    return dead


def test_dead_links_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A part\n")
    page.write_text(
        "# Page\n[ok](other.md#a-part) [self](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
    )
    assert dead_links(page) == [
        "missing.md: no such file",
        "other.md#nope: no heading with that anchor in other.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    dead = dead_links(page)
    assert not dead, f"{page.relative_to(ROOT)}: " + "; ".join(dead)


def test_readme_is_an_entrance() -> None:
    """README stays short (issue 27: under 200 lines), keeps the two commands, and links every
    docs page, so that nothing moved out of it is out of reach."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    assert "\nmake demo   # " in readme and "\nmake test   # " in readme
    linked = {m.group(1) for m in re.finditer(r"\]\((docs/[\w.-]+\.md)[#)]", readme)}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, sorted(pages - linked)
