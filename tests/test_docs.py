"""The repository documents itself: links in the docs resolve, and nothing cites notes
kept outside the repository (a maintainer with only this tree could not follow them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "node").rglob("*.md"), *(ROOT / "planner").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # [text](target) with an optional anchor
# Names of the notes that lived next to the repository while it was written.
OUTSIDE = re.compile(r"\.\./shared|/work/shared|\bDESIGN\.md|\bINTERFACES\.md|\bSTYLE\.md")


def tracked_text_files() -> list[Path]:
    """Files git knows (tracked or new, not ignored), skipping binaries."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / line for line in out.splitlines()
             if line and not line.endswith((".tflite", ".png", ".npy", ".whl"))]
    return [f for f in files if f.is_file()]


def test_every_relative_link_in_the_docs_resolves() -> None:
    assert (ROOT / "docs").is_dir() and len(DOCS) >= 8
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_the_docs_the_code_cites_exist() -> None:
    cited = set()
    for f in tracked_text_files():
        if f.suffix in (".py", ".md", ".toml", ".sh"):
            cited.update(re.findall(r"\bdocs/([a-z_]+\.md)", f.read_text(errors="replace")))
    assert cited, "nothing cites docs/*.md"
    missing = sorted(c for c in cited if not (ROOT / "docs" / c).is_file())
    assert not missing, f"cited but missing: {missing}"


def test_nothing_cites_notes_outside_the_repository() -> None:
    hits = []
    for f in tracked_text_files():
        if f == Path(__file__).resolve():
            continue
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:90]}")
    assert not hits, "cites notes outside the repository:\n" + "\n".join(hits)
