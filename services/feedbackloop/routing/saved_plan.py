"""A plan saved by `feedbackloop policy plan DIR -out FILE`: its format, and reading it back.

The command line (`policy apply FILE`) and the console's plan upload read it the same way, so a
file one accepts the other accepts too.
"""

from __future__ import annotations

import json

from feedbackloop.v1 import routing_pb2

PLAN_FORMAT = "feedbackloop-plan/1"


class SavedPlanError(ValueError):
    """What is wrong with a saved plan, in words that start with the file's name.

    `damaged`: the file was a plan once (cut short, edited): making it again is the remedy.
    """

    def __init__(self, message: str, *, damaged: bool = True) -> None:
        super().__init__(message)
        self.damaged = damaged


def parse_saved_plan(name: str, text: str) -> tuple[list[routing_pb2.PolicyFile], int]:
    """The files and base revision of a saved plan, checked whole."""
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as error:
        raise SavedPlanError(
            f"{name}: not a saved plan: invalid JSON at line {error.lineno} column {error.colno} "
            f"({error.msg}; truncated?)"
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != PLAN_FORMAT:
        raise SavedPlanError(f'{name} is not a saved plan (no "format": "{PLAN_FORMAT}")', damaged=False)
    base = saved.get("base_revision")
    if not isinstance(base, int) or isinstance(base, bool) or base < 0:
        raise SavedPlanError(f"{name}: incomplete plan: base_revision must be a revision number")
    entries = saved.get("files")
    if not isinstance(entries, list) or not entries:
        raise SavedPlanError(f"{name}: incomplete plan: files must be a non-empty list")
    files = []
    for i, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("content"), str)
        ):
            raise SavedPlanError(f"{name}: incomplete plan: files[{i}] needs a path and a content")
        files.append(routing_pb2.PolicyFile(path=entry["path"], content=entry["content"]))
    return files, base
