"""The index: what the matcher serves, and rebuilding a snapshot."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AdminRole, AnyRole, ServicesDep
from api.schemas import IndexStatus
from api.services import Services
from index_builder.snapshot import list_snapshots

router = APIRouter(prefix="/index", tags=["index"])


def _status(services: Services) -> IndexStatus:
    return IndexStatus(
        **services.matcher.status(),
        store_change_seq=services.store.max_seq(),
        snapshots_on_disk=[
            s.snapshot_id for s in list_snapshots(services.settings.snapshots_path())
        ],
    )


@router.get("", response_model=IndexStatus)
def index_status(services: ServicesDep, _: AnyRole) -> IndexStatus:
    return _status(services)


@router.post("/rebuild", status_code=status.HTTP_201_CREATED, response_model=IndexStatus)
def rebuild(services: ServicesDep, _: AdminRole) -> IndexStatus:
    """Build a snapshot of every template now, publish its manifest, serve it."""
    services.enrollment.publish_snapshot(services.model_id)
    return _status(services)
