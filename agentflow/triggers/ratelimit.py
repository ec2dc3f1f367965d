"""A token bucket per trigger: `rate` deliveries a minute, in bursts of up to `rate`.

Checked before anything else is done for a delivery (reading its body, checking its signature), so
a flood costs almost nothing and the server keeps answering everything else. Per process: with
several server processes behind a balancer, each allows `rate` (docs/triggers.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> float:
        """0 when a delivery may go ahead (one token taken); else the seconds until the next token."""
        now = self.clock()
        capacity = float(per_minute)
        refill = per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * refill)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / refill
