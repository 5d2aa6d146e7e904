"""Where a CLI command writes a stream it receives (`dataset export -o OUTPUT`).

- `-` is standard output.
- A special file (a character device such as /dev/null or a terminal, a FIFO, a socket, or a
  symlink to one, such as /dev/stdout) is opened and written in place: renaming onto it would
  replace the device's name with a regular file. So is anything under /dev/ or /proc/ that
  leads to a regular file (/dev/stdout when the shell redirected it into a file): it is the
  shell's file, opened as `>` would.
- A regular file (new, existing, or behind a symlink, which is kept) is written to a
  `.partial` file beside it and renamed onto it at the end, so a failed or interrupted stream
  leaves the previous content, and never half of a new one.

Nothing is opened or created before the first line arrives or the stream ends successfully:
a stream the server refuses at once (an unknown dataset) leaves the target untouched.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STDOUT = "-"
IN_PLACE_ROOTS = ("/dev/", "/proc/")


class TargetError(ValueError):
    """The output cannot be written; the message says why, naming the path."""


@dataclass(frozen=True)
class ExportTarget:
    name: str  # as the user gave it, for messages
    path: Path | None  # None: standard output
    atomic: bool  # write a .partial beside `path` and rename it onto `path`

    @classmethod
    def of(cls, output: str) -> ExportTarget:
        """Check `output` before anything is asked of the server."""
        if output == STDOUT:
            return cls("standard output", None, atomic=False)
        if not output:
            raise TargetError("the output path is empty (use - for standard output)")
        given = Path(output)
        try:
            mode: int | None = os.stat(given).st_mode  # follows symlinks
        except FileNotFoundError:
            mode = None
        except OSError as error:
            raise TargetError(f"{output}: {error.strerror}") from None
        if mode is not None and stat.S_ISDIR(mode):
            raise TargetError(f"{output}: is a directory")
        if mode is not None and not stat.S_ISREG(mode):
            return cls(output, given, atomic=False)
        if os.path.abspath(output).startswith(IN_PLACE_ROOTS):
            return cls(output, given, atomic=False)
        real = Path(os.path.realpath(given))  # a symlink stays a symlink to the new content
        if not real.parent.is_dir():
            raise TargetError(f"{output}: directory {real.parent} does not exist")
        return cls(output, real, atomic=True)

    @contextmanager
    def writer(self) -> Iterator[Callable[[str], None]]:
        """A `write(text)` for the stream; the target is complete only if the block succeeds."""
        handle: IO[str] | None = None
        partial = self.path.with_name(self.path.name + ".partial") if self.atomic and self.path else None

        def open_once() -> IO[str]:
            nonlocal handle
            if handle is None:
                if self.path is None:
                    handle = sys.stdout
                else:
                    handle = (partial or self.path).open("w", encoding="utf-8")
            return handle

        def write(text: str) -> None:
            open_once().write(text)

        try:
            yield write
            opened = open_once()  # an empty stream that ended well still makes an (empty) file
            opened.flush()
            if opened is not sys.stdout:
                opened.close()
            if partial is not None and self.path is not None:
                partial.replace(self.path)
        finally:
            if handle is not None and handle is not sys.stdout:
                handle.close()
            if partial is not None:
                partial.unlink(missing_ok=True)
