"""The index: what the matcher serves, and rebuilding a snapshot."""

from __future__ import annotations

import threading

from fastapi import APIRouter, status

from api.deps import AdminRole, AnyRole, ServicesDep
from api.schemas import IndexStatus
from index_builder.snapshot import build_snapshot, list_snapshots, snapshots_dir

router = APIRouter(prefix="/index", tags=["index"])
_build_lock = threading.Lock()


def _status(services) -> IndexStatus:  # noqa: ANN001
    return IndexStatus(
        **services.matcher.status(),
        store_change_seq=services.store.max_seq(),
        snapshots_on_disk=[s.snapshot_id for s in list_snapshots(snapshots_dir(services.settings))],
    )


@router.get("", response_model=IndexStatus)
def index_status(services: ServicesDep, _: AnyRole) -> IndexStatus:
    return _status(services)


@router.post("/rebuild", status_code=status.HTTP_201_CREATED, response_model=IndexStatus)
def rebuild(services: ServicesDep, _: AdminRole) -> IndexStatus:
    """Build a snapshot of every template now, publish its manifest, serve it."""
    cfg = services.settings.index
    with _build_lock:
        info = build_snapshot(
            services.store,
            snapshots_dir(services.settings),
            services.model_id,
            n_trees=cfg.n_trees,
            seed=cfg.seed,
            keep=cfg.keep,
        )
        services.publisher.publish_snapshot(info)
    return _status(services)
