"""Rate limits per API key and route class, as configured per role (``api.rate_limits``).

Each key has a token bucket per route class: ``burst`` requests at once, refilled at
``per_minute``. A request the bucket cannot pay for is refused with 429 and ``Retry-After``
(whole seconds until a token is back). Only authenticated requests are counted: limits
belong to keys, and an unknown key is refused before it costs anything.

The buckets live in memory, so the limits hold **per API process**: N processes (uvicorn
workers, replicas behind a balancer) let a key make up to N times as many requests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from api.errors import ApiError
from facerec.config import ApiRole, RateLimit, RateLimitsConfig

RouteClass = Literal["recognition", "enrollment", "search"]
_RECOGNITION_PATHS = frozenset({"/recognize", "/verify"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def route_class(method: str, path: str) -> RouteClass:
    """recognition: the face engine's ad-hoc work; enrollment: every change (people, faces,
    reviews, index); search: every read. By method, so a new route is classed without
    being listed here."""
    if path in _RECOGNITION_PATHS:
        return "recognition"
    return "search" if method.upper() in _READS else "enrollment"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by (key, route class); thread-safe (sync routes run in a thread pool)."""

    def __init__(
        self, limits: RateLimitsConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: dict[tuple[str, RouteClass], _Bucket] = {}
        self._lock = threading.Lock()

    def wait_s(self, key_id: str, role: ApiRole, route: RouteClass) -> float:
        """Take a token for one request: 0 when there was one, else the seconds until one
        is back (nothing taken)."""
        limit = getattr(self.limits.of(role), route)
        if limit is None:
            return 0.0
        rate = limit.per_minute / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((key_id, route))
            if bucket is None:
                bucket = self._buckets[(key_id, route)] = _Bucket(float(limit.burst), now)
            bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def check(self, key_id: str, name: str, role: ApiRole, route: RouteClass) -> None:
        """Count one request of ``key_id``; over its limit: ApiError 429 with Retry-After."""
        wait = self.wait_s(key_id, role, route)
        if wait <= 0:
            return
        limit: RateLimit = getattr(self.limits.of(role), route)
        retry_after = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"key {name!r} made more {route} requests than its role ({role}) allows: "
            f"{limit.per_minute} a minute, {limit.burst} at once; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            extra={"retry_after_s": retry_after},
        )
