"""The key cache: known keys are cached for the TTL, unknown ones never."""

from __future__ import annotations

from feedbackloop import auth
from feedbackloop.interceptors import CachedKeyResolver


def test_known_keys_are_cached_and_unknown_ones_are_looked_up_each_time() -> None:
    store: dict[str, auth.Principal] = {}
    lookups: list[str] = []

    def lookup(digest: str) -> auth.Principal | None:
        lookups.append(digest)
        return store.get(digest)

    resolver = CachedKeyResolver(lookup, ttl_seconds=60)
    assert resolver("new-key") is None
    # Created after a refused attempt: it works at once, not after the TTL.
    store[auth.hash_key("new-key")] = auth.Principal("p", frozenset({auth.Scope.INGEST}), key_id="k1")
    assert resolver("new-key") is not None
    assert resolver("new-key") is not None
    assert len(lookups) == 2  # the second success came from the cache
    assert resolver("bogus") is None and resolver("bogus") is None
    assert len(lookups) == 4  # an unknown key is not kept: asked again, it goes to the store again
