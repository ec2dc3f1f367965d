"""Embeddings for memory, through LiteLLM (`aembedding`): any OpenAI-compatible server, Ollama, hosted.

A recall embeds its query; the same query again (a loop, a retry, the next run asking the same thing)
is answered from a small cache and costs nothing.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.settings import Settings

CACHE_SIZE = 1024


class EmbeddingError(RuntimeError):
    """The embedding model did not answer with vectors."""


@dataclass
class Embedder:
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    _cache: OrderedDict[str, list[float]] = field(default_factory=OrderedDict, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder | None:
        """None when no embedding model is configured (keyword recall only)."""
        model = settings.embedding_model
        if not model:
            return None
        base = settings.embedding_api_base
        key = None
        if model.startswith("openai/"):
            base = base or settings.api_base
            key = settings.api_key
        elif model.startswith(("ollama/", "ollama_chat/")):
            base = base or os.environ.get("OLLAMA_API_BASE") or "http://localhost:11434"
        return cls(model=model, api_base=base, api_key=key, timeout=settings.llm_timeout)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import litellm

        kwargs: dict[str, Any] = {"model": self.model, "input": list(texts), "timeout": self.timeout}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        try:
            response = await litellm.aembedding(**kwargs)
        except Exception as exc:
            raise EmbeddingError(f"embedding model {self.model} failed: {type(exc).__name__}: {exc}") from None
        vectors = []
        for entry in response.data:
            vector = entry["embedding"] if isinstance(entry, dict) else getattr(entry, "embedding", None)
            if not isinstance(vector, list) or not vector:
                raise EmbeddingError(f"embedding model {self.model} answered without a vector")
            vectors.append([float(value) for value in vector])
        if len(vectors) != len(texts):
            raise EmbeddingError(f"embedding model {self.model} gave {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        (vector,) = await self.embed([text])
        self._cache[text] = vector
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return vector
