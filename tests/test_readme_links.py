"""Every relative link and image in README.md points at a file tracked by git.

A link that works in the author's working tree but names an ignored or uncommitted file is broken
on GitHub and in every fresh clone (a too-broad ``results/`` in .gitignore once hid all of
``docs/results/``). CI runs in a git clone, so outside one this test fails rather than skips.
"""

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Inline links and images: [text](target) and ![alt](target), with an optional "title".
_INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Reference definitions: [label]: target
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def link_targets(markdown: str) -> list[str]:
    """Relative link/image targets in ``markdown`` (outside code), without #anchors, in order."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    targets = _INLINE.findall(text) + _REFERENCE.findall(text)
    relative = []
    for target in targets:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "//")):
            continue  # http:, https:, mailto: ... and in-page anchors
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if path and path not in relative:
            relative.append(path)
    return relative


def tracked_files() -> set[str]:
    try:
        proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail("git is not installed: README links are checked against `git ls-files`")
    if proc.returncode != 0:
        pytest.fail(f"{ROOT} is not a git checkout (`git ls-files` failed: {proc.stderr.strip()}); "
                    "README links are checked against the files git tracks")
    return {p for p in proc.stdout.split("\0") if p}


def _resolves(path: str, tracked: set[str]) -> bool:
    rel = (README.parent / path).resolve()
    try:
        key = rel.relative_to(ROOT).as_posix()
    except ValueError:
        return False  # points outside the repository
    return key in tracked or any(t.startswith(key.rstrip("/") + "/") for t in tracked)  # file or folder


def test_link_parser_finds_links_and_images_and_skips_code_and_urls():
    text = ("See [a](docs/a.md#x) and ![plot](docs/p.png \"t\") and [w](https://x.org/y.png).\n"
            "`[not](code.md)`\n```\n[nor](fenced.md)\n```\n[ref]: docs/r.csv\n[in page](#usage)\n")
    assert link_targets(text) == ["docs/a.md", "docs/p.png", "docs/r.csv"]


def test_readme_has_relative_links_to_check():
    assert link_targets(README.read_text(encoding="utf-8")), "README.md has no relative links: parser broken?"


def test_every_relative_readme_link_is_a_tracked_file():
    tracked = tracked_files()
    missing = [p for p in link_targets(README.read_text(encoding="utf-8")) if not _resolves(p, tracked)]
    assert not missing, (
        f"README.md links to {len(missing)} path(s) that git does not track (broken in a fresh clone): "
        + ", ".join(missing)
        + ". Commit them (e.g. `make bench BENCH_ARGS=\"--publish docs/results/cpu\"`, then "
        "`git add docs/results/cpu`) "
        "or fix the links."
    )
