"""Ranking memories: a safe FTS5 query, vector similarity in numpy, and the fusion of both.

Score of a memory found by keywords at rank `r_k` and/or by vectors at rank `r_v`:

    score = 1/(60 + r_k) + 1/(60 + r_v) + 0.002·importance + 0.002·0.5^(age_days / 30)

Reciprocal-rank fusion (k = 60, as Cormack et al.) needs no score calibration between bm25 and cosine; the
two small terms only break near-ties in favour of what matters more and what is fresher.

Keywords are looked for precision first: the memories holding every word of the query (few, so bm25 scores
only those), then — when that finds fewer than asked — those holding any of them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RRF_K = 60
IMPORTANCE_WEIGHT = 0.002
RECENCY_WEIGHT = 0.002
RECENCY_HALF_LIFE_DAYS = 30.0
MAX_TERMS = 32
_TERM = re.compile(r"\w+", re.UNICODE)


STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "what",
        "which",
        "who",
        "how",
        "when",
        "where",
        "do",
        "does",
        "did",
        "my",
        "me",
        "we",
        "you",
        "your",
        "our",
    }
)


def terms_of(text: str) -> list[str]:
    """The words to look for: lowercased, without the commonest English words (unless that is all there is)."""
    terms = list(dict.fromkeys(term.lower() for term in _TERM.findall(text)))[:MAX_TERMS]
    meaningful = [term for term in terms if term not in STOP_WORDS]
    return meaningful or terms


def fts_query(text: str, *, every: bool = False) -> str | None:
    """The FTS5 MATCH expression for free text: each word quoted, OR-ed (`every`: AND-ed). Model or user text
    never reaches FTS5's syntax (`NEAR(`, `*`, `-`, `:` and quotes are just characters around words); None: no
    words."""
    terms = terms_of(text)
    return (" " if every else " OR ").join(f'"{term}"' for term in terms) if terms else None


def fuse(
    keyword: Sequence[str],
    vector: Sequence[str],
    importance: dict[str, float],
    updated_at: dict[str, float],
    now: float,
) -> list[tuple[str, float, int | None, int | None]]:
    """(id, score, keyword rank, vector rank), best first."""
    ranks_k = {item_id: rank for rank, item_id in enumerate(keyword, 1)}
    ranks_v = {item_id: rank for rank, item_id in enumerate(vector, 1)}
    fused = []
    for item_id in dict.fromkeys([*keyword, *vector]):
        score = 0.0
        rank_k, rank_v = ranks_k.get(item_id), ranks_v.get(item_id)
        if rank_k is not None:
            score += 1 / (RRF_K + rank_k)
        if rank_v is not None:
            score += 1 / (RRF_K + rank_v)
        age_days = max(now - updated_at.get(item_id, now), 0.0) / 86400
        score += IMPORTANCE_WEIGHT * importance.get(item_id, 0.5)
        score += RECENCY_WEIGHT * 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)
        fused.append((item_id, score, rank_k, rank_v))
    fused.sort(key=lambda entry: (-entry[1], entry[0]))
    return fused


def to_blob(vector: Sequence[float]) -> bytes:
    import numpy as np  # only vectors need it: keyword memory works in images without numpy

    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or not array.size or not np.all(np.isfinite(array)):
        raise ValueError("an embedding is a non-empty list of finite numbers")
    return array.tobytes()


@dataclass(frozen=True)
class Matrix:
    """A snapshot of one (scope, model)'s vectors. Rows past `count` in the buffers belong to later snapshots:
    extending appends there and publishes a new snapshot, so a search holding this one is never disturbed."""

    version: int
    ids: list[str]  # append-only, shared with the snapshots extended from this one
    buffer: np.ndarray  # rows normalised to length 1, room to grow past `count`
    expiry: np.ndarray  # +inf for memories that never expire
    count: int
    soonest: float  # the earliest expiry among the rows (+inf: none expires), so most searches skip the mask
    writes: int = 0
    """The scope's write count this snapshot has seen (stores that append new rows without a rebuild)."""
    last_seq: int = 0
    """The newest row in it: rows after this one are appended, not rebuilt."""

    @property
    def vectors(self) -> np.ndarray:
        return self.buffer[: self.count]

    @property
    def expires(self) -> np.ndarray:
        return self.expiry[: self.count]


class VectorIndex:
    """Each (scope, model)'s vectors as one normalised matrix in memory, rebuilt when the scope's version
    changes (in any process): a hybrid search at 100k memories is one mat-vec. A store whose adds do not
    change the version (SQLite) appends them instead: a memory saved by every run costs its own row, not a
    reload of the scope."""

    def __init__(self) -> None:
        self._matrices: dict[tuple[str, str], Matrix] = {}
        self._lock = threading.Lock()

    def cached(self, scope: str, model: str, version: int) -> Matrix | None:
        with self._lock:
            matrix = self._matrices.get((scope, model))
        return matrix if matrix is not None and matrix.version == version else None

    def build(
        self,
        scope: str,
        model: str,
        version: int,
        rows: Sequence[tuple[str, bytes, float | None]],
        *,
        writes: int = 0,
        last_seq: int = 0,
    ) -> Matrix | None:
        import numpy as np

        ids, vectors, expires = _decoded(rows, None)
        if not ids:
            return None
        count = len(ids)
        width = vectors.shape[1]
        buffer = np.empty((count + _room(count), width), dtype=np.float32)
        _normalise(vectors, buffer[:count])
        expiry = np.full(buffer.shape[0], np.inf)
        expiry[:count] = expires
        matrix = Matrix(version, ids, buffer, expiry, count, float(expires.min()), writes, last_seq)
        with self._lock:
            self._matrices[(scope, model)] = matrix
        return matrix

    def extend(
        self,
        scope: str,
        model: str,
        matrix: Matrix,
        rows: Sequence[tuple[str, bytes, float | None]],
        *,
        writes: int,
        last_seq: int,
    ) -> Matrix | None:
        """`matrix` with `rows` (newer than its `last_seq`) appended: a new snapshot, the old one untouched.
        None when another thread replaced it meanwhile with an older one: rebuild."""
        import numpy as np

        ids, vectors, expires = _decoded(rows, matrix.buffer.shape[1])
        with self._lock:
            current = self._matrices.get((scope, model))
            if current is not matrix:  # another thread extended, rebuilt or forgot it meanwhile
                return current if current is not None and current.last_seq >= last_seq else None
            added = len(ids)
            buffer, expiry = matrix.buffer, matrix.expiry
            total = matrix.count + added
            if total > buffer.shape[0]:  # out of room: a larger copy (amortised, as a list grows)
                buffer = np.empty((total + _room(total), buffer.shape[1]), dtype=np.float32)
                buffer[: matrix.count] = matrix.vectors
                expiry = np.full(buffer.shape[0], np.inf)
                expiry[: matrix.count] = matrix.expires
            ids_list = matrix.ids if buffer is matrix.buffer else list(matrix.ids[: matrix.count])
            if added:
                _normalise(vectors, buffer[matrix.count : total])
                expiry[matrix.count : total] = expires
                ids_list.extend(ids)
            soonest = min(matrix.soonest, float(expires.min())) if added else matrix.soonest
            extended = Matrix(matrix.version, ids_list, buffer, expiry, total, soonest, writes, last_seq)
            self._matrices[(scope, model)] = extended
        return extended

    def forget(self, scope: str) -> None:
        with self._lock:
            for key in [key for key in self._matrices if key[0] == scope]:
                del self._matrices[key]


def _room(count: int) -> int:
    """Spare rows allocated past `count`: appends rarely copy, and the matrix stays within 1.25x its size."""
    return count // 4 + 64


def _decoded(
    rows: Sequence[tuple[str, bytes, float | None]], width: int | None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, vectors, expiry) of the rows of one width (the first row's, unless given): a memory embedded by
    another model revision is left to keyword search."""
    import numpy as np

    if width is None and rows:
        width = len(rows[0][1]) // 4
    kept = [row for row in rows if len(row[1]) == 4 * (width or 0)]
    ids = [item_id for item_id, _, _ in kept]
    vectors = np.frombuffer(b"".join(blob for _, blob, _ in kept), dtype=np.float32).reshape(len(kept), width or 0)
    expires = np.array([np.inf if expires_at is None else expires_at for _, _, expires_at in kept], dtype=np.float64)
    return ids, vectors, expires


def _normalise(vectors: np.ndarray, out: np.ndarray) -> None:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, np.where(norms == 0, 1, norms), out=out)


def nearest(matrix: Matrix, query: Sequence[float], limit: int, now: float | None = None) -> list[tuple[str, float]]:
    """(id, cosine) of the `limit` closest live vectors."""
    import numpy as np

    vector = np.asarray(query, dtype=np.float32)
    if vector.size != matrix.buffer.shape[1]:
        raise ValueError(
            f"the query embedding has {vector.size} dimensions, the memories {matrix.buffer.shape[1]}: "
            "embed both with the same model"
        )
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        return []
    scores = matrix.vectors @ (vector / norm)  # rows are unit length: the dot product is the cosine
    now = time.time() if now is None else now
    if matrix.soonest <= now:
        scores[matrix.expires <= now] = -np.inf
    limit = min(limit, scores.size)
    top = np.argpartition(scores, scores.size - limit)[scores.size - limit :]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(matrix.ids[index], float(scores[index])) for index in top if np.isfinite(scores[index])]
