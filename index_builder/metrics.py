"""Prometheus gauges of the index builder: how long the last snapshot build took and how many
items it holds, per model id.

They live in prometheus-client's default registry, so any process that serves it (``facerec
ingest --metrics-port``, ``start_http_server``) exposes them; a one-shot ``facerec index
build`` can leave them for node-exporter's textfile collector with :func:`write_textfile`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, write_to_textfile

__all__ = ["BUILD_SECONDS", "SNAPSHOT_ITEMS", "observe_build", "timed_build", "write_textfile"]

BUILD_SECONDS = Gauge(
    "facerec_index_build_seconds",
    "Wall time of the last Annoy snapshot build (read templates, build, write, verify).",
    ["model_id"],
)
SNAPSHOT_ITEMS = Gauge(
    "facerec_index_snapshot_items",
    "Templates (Annoy items) in the last snapshot built.",
    ["model_id"],
)
P = ParamSpec("P")
R = TypeVar("R")


def observe_build(model_id: str, seconds: float, items: int) -> None:
    BUILD_SECONDS.labels(model_id).set(seconds)
    SNAPSHOT_ITEMS.labels(model_id).set(items)


def timed_build(build: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function returning a ``SnapshotInfo``: time it and set both gauges from
    the manifest it wrote (``model_id``, ``count``). A failed build leaves them unchanged."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        info = build(*args, **kwargs)
        manifest: dict[str, Any] = getattr(info, "manifest", {})
        observe_build(
            str(manifest.get("model_id", "unknown")),
            time.perf_counter() - started,
            int(manifest.get("count", 0)),
        )
        return info

    return wrapper


def write_textfile(path: Path, registry: CollectorRegistry = REGISTRY) -> None:
    """Write the registry in the text exposition format (atomically) for a textfile collector."""
    write_to_textfile(str(path), registry)
