"""Every relative link of the docs leads somewhere: the file (a page or the code it names) exists in the
repository, and a `#anchor` is a heading of the page it points into, by GitHub's slug rules. The README is a
front page (the topics live under docs/), so it also stays short."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "vodlocal" / "README.md"]
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+).+?\1")
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
LINK_TEXT = re.compile(r"\[([^\]]*)\]\([^)]*\)")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, where links and headings mean something."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation but `-` and `_` dropped, spaces `-`."""
    text = LINK_TEXT.sub(r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """A page's heading anchors; a repeated heading gets `-1`, `-2`, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_targets(page: Path) -> list[str]:
    targets = []
    for line in prose_lines(page.read_text()):
        without_code = CODE_SPAN.sub("", line)
        targets += INLINE_LINK.findall(without_code)
        definition = REFERENCE_DEFINITION.match(without_code)
        if definition:
            targets.append(definition.group(1))
    return targets


def broken_links(page: Path, root: Path) -> list[str]:
    """Each relative link of `page` that leads nowhere, with why."""
    broken = []
    for target in link_targets(page):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.is_relative_to(root.resolve()):
            broken.append(f"{target}: outside the repository")
        elif not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (destination.suffix != ".md" or anchor not in anchors(destination)):
            broken.append(f"{target}: no heading #{anchor} in {destination.relative_to(root.resolve())}")
    return broken


@pytest.mark.parametrize("page", DOCS, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    assert page.exists()
    assert broken_links(page, ROOT) == []


def test_readme_stays_a_front_page() -> None:
    length = len((ROOT / "README.md").read_text().splitlines())
    assert length <= README_MAX_LINES, f"README.md has {length} lines: move the topic to a page under docs/"


def test_the_checker_finds_a_missing_file_a_missing_heading_and_code_outside_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "app.py").write_text("")
    (tmp_path / "docs" / "api.md").write_text(
        "# API\n\n## `POST /uploads/{uploadId}/complete` → `200`\n\n## Errors\n\n## Errors\n"
    )
    page = tmp_path / "README.md"
    page.write_text(
        "# Front\n\n"
        "[complete](docs/api.md#post-uploadsuploadidcomplete--200), [again](docs/api.md#errors-1),\n"
        "[code](app.py), [self](#front), [web](https://example.com/x#y), `[not a link](nowhere.md)`\n\n"
        "```\n[in a fence](fenced.md)\n```\n\n"
        "[gone](docs/gone.md), [no such heading](docs/api.md#errors-2), [code gone](chalicelib/gone.py),\n"
        "[here](#nowhere), [up](../outside.md)\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/gone.md: no such file",
        "docs/api.md#errors-2: no heading #errors-2 in docs/api.md",
        "chalicelib/gone.py: no such file",
        "#nowhere: no heading #nowhere in README.md",
        "../outside.md: outside the repository",
    ]
