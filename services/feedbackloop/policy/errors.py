"""PolicyError: one problem in one policy file, pointing at the exact YAML node."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class PolicyError:
    """A validation error; `str()` gives `file:line:col: path: message` (editor-clickable).

    Field order makes sorting by file, then position, the natural order for reports.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def format_path(path: tuple[str | int, ...]) -> str:
    """`("spec", "actions", 0, "human_review")` -> `spec.actions[0].human_review`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
