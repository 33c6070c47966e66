"""Cameras as the job reports them: frames/s, gate share and last sighting per camera."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from api.deps import ReviewRole, ServicesDep
from api.routes.sightings import public_sighting
from api.schemas import CameraPublic, CamerasPage

router = APIRouter(prefix="/cameras", tags=["cameras"])


@router.get("", response_model=CamerasPage)
def list_cameras(services: ServicesDep, _: ReviewRole) -> CamerasPage:
    """Every camera the job has reported on (its newest status window, written every
    ``job.camera_status_interval_ms``), by id."""
    items = []
    for c in services.camera_status():
        fields = asdict(c)
        fields["last_sighting"] = public_sighting(c.last_sighting) if c.last_sighting else None
        items.append(CameraPublic(**fields))
    return CamerasPage(items=items)
