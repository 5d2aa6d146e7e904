"""One replacement of a Milvus Lite function, made only on the Lite versions it was checked
against (`lite_search`'s search executor, `lite_compaction`'s background worker).

Lite runs inside this process, so a replacement is an attribute set where Lite looks it up. On
another Lite version the contract it was checked against may not hold: the stock code stays,
and the log says what that costs.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class LitePatch:
    """`owner.attribute = replacement`, where `owner` is the module `module` or its class
    `owner_class`; `kept` says what a version left unpatched keeps (for the warning)."""

    def __init__(
        self,
        module: str,
        owner_class: str | None,
        attribute: str,
        replacement: Any,
        checked_versions: frozenset[str],
        kept: str,
    ) -> None:
        self._module = module
        self._owner_class = owner_class
        self._attribute = attribute
        self._replacement = replacement
        self._checked = checked_versions
        self._kept = kept
        self._stock: Any = None
        self._lock = threading.Lock()

    def _owner(self) -> Any:
        module = importlib.import_module(self._module)
        return getattr(module, self._owner_class) if self._owner_class else module

    @property
    def stock(self) -> Any:
        """Lite's own function, installed or not."""
        with self._lock:
            return self._stock if self._stock is not None else getattr(self._owner(), self._attribute)

    @property
    def installed(self) -> bool:
        with self._lock:
            return self._stock is not None

    def install(self) -> bool:
        """Put the replacement in, on a checked version; True if it is in use."""
        import milvus_lite

        with self._lock:
            if self._stock is not None:
                return True
            if milvus_lite.__version__ not in self._checked:
                log.warning(
                    "milvus-lite %s: keeping %s (the replacement was checked against %s)",
                    milvus_lite.__version__,
                    self._kept,
                    ", ".join(sorted(self._checked)),
                )
                return False
            owner = self._owner()
            self._stock = getattr(owner, self._attribute)
            setattr(owner, self._attribute, self._replacement)
            return True

    def uninstall(self) -> None:
        """Put Lite's own function back (tests compare the two)."""
        with self._lock:
            if self._stock is not None:
                setattr(self._owner(), self._attribute, self._stock)
                self._stock = None
