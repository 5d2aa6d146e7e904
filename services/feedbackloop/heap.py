"""Keep the objects a server creates at start-up out of the garbage collector's full passes.

A full (generation 2) collection walks every object the collector tracks. Once a server has
started, most of them come from imports, the embedding model and the opened Milvus collection,
and live as long as the process. Walking them took about 100 ms on the development machine (2
cores), paid as latency by whichever request happened to trigger the collection: in the
aggregate benchmark those pauses were the whole p99. `gc.freeze()` moves every object that
exists now into a permanent generation that collections skip; objects created later are
collected as before.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect garbage once, then exempt every surviving object from later collections.

    Returns how many objects are now exempt. Call it once start-up work is done; objects that
    become garbage after this are still freed by reference counting, and only cycles among
    frozen objects are never reclaimed, which for start-up state is the point.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d start-up objects out of garbage collection", frozen)
    return frozen
