"""Writing the "## Registry" section of docs/benchmarks.md.

Other benchmarks own other ``## `` sections of the same file, and may write it
at about the same time: only the ``### `` subsection being written is replaced,
the file is read again right before writing, and a missing section or
subsection is appended at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Registry"


def _block_end(lines: list[str], start: int, levels: tuple[str, ...]) -> int:
    for index in range(start + 1, len(lines)):
        if lines[index].startswith(levels):
            return index
    return len(lines)


def write_subsection(title: str, body: str, *, doc: Path = DOC, section: str = SECTION) -> None:
    """Replace (or add) ``### title`` under ``section`` (``## Registry``) with
    ``body``, leaving every other part of ``doc`` as it is."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    heading = f"### {title}"
    block = [heading, "", *body.strip("\n").split("\n"), ""]
    try:
        start = lines.index(section)
    except ValueError:
        lines += ["", section, "", *block]
    else:
        section_end = _block_end(lines, start, ("## ",))
        try:
            sub = lines.index(heading, start, section_end)
        except ValueError:
            insert_at = section_end
            while insert_at > start + 1 and not lines[insert_at - 1].strip():
                insert_at -= 1
            lines[insert_at:section_end] = ["", *block]
        else:
            sub_end = _block_end(lines, sub, ("## ", "### "))
            lines[sub:sub_end] = block
    out = "\n".join(lines).rstrip("\n") + "\n"
    tmp = doc.with_suffix(f".md.tmp-{section.removeprefix('## ').lower()}")
    tmp.write_text(out)
    os.replace(tmp, doc)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
