"""Line diffs of templates and policy files, as the templates render them (one class a line)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "del", "ctx" or "hunk"
    text: str


def line_diff(before: str, after: str, *, context: int = 3) -> list[DiffLine]:
    """A unified diff of two texts without its file header; [] when they are equal."""
    lines: list[DiffLine] = []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=context):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            lines.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            lines.append(DiffLine("add", line))
        elif line.startswith("-"):
            lines.append(DiffLine("del", line))
        else:
            lines.append(DiffLine("ctx", line))
    return lines
