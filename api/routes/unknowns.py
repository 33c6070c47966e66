"""Clusters of unknown faces: the strangers who keep coming back, and naming one in a step
(index_builder/unknowns.py does the work; the UI calls the same service methods)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import EnrollRole, ReviewRole, ServicesDep
from api.schemas import (
    STORE_INT_MAX,
    SightingReason,
    UnknownClusterDetailPublic,
    UnknownClusterPublic,
    UnknownClustersPage,
    UnknownEnroll,
    UnknownEnrolled,
)

router = APIRouter(prefix="/unknowns", tags=["unknowns"])
REFRESH_BUDGET_S = 10.0
"""A listing catches up for at most this long (a backlog goes on in the background)."""
ClusterId = Annotated[int, Path(ge=0, le=STORE_INT_MAX)]


@router.get("", response_model=UnknownClustersPage)
def list_clusters(
    services: ServicesDep,
    _: ReviewRole,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    min_size: Annotated[
        int, Query(ge=1, le=STORE_INT_MAX, description="Only clusters of this many sightings")
    ] = 1,
) -> UnknownClustersPage:
    """Clusters of unknown faces, the most recently seen first. Catches up with the event
    store first, unless a catch-up is already running (then the clusters as they stand)."""
    services.unknowns.refresh(wait=False, max_seconds=REFRESH_BUDGET_S)
    found = services.unknowns.clusters(limit=limit, min_size=min_size)
    return UnknownClustersPage(items=[UnknownClusterPublic(**asdict(c)) for c in found])


@router.get("/{cluster_id}", response_model=UnknownClusterDetailPublic)
def get_cluster(
    cluster_id: ClusterId, services: ServicesDep, _: ReviewRole
) -> UnknownClusterDetailPublic:
    """One cluster with every member sighting, best face first."""
    return UnknownClusterDetailPublic(**asdict(services.unknowns.cluster(cluster_id)))


@router.post("/{cluster_id}/enroll", response_model=UnknownEnrolled)
def enroll_cluster(
    cluster_id: ClusterId, body: UnknownEnroll, services: ServicesDep, who: EnrollRole
) -> UnknownEnrolled:
    """Name the cluster: the person (new, or ``person_id``) gets its best crops as
    templates, recognised at once by the job and /recognize, and every member sighting is
    assigned to them. The cluster is then gone."""
    done = services.unknowns.enroll(cluster_id, body.display_name, body.person_id, by=who.name)
    body_out = asdict(done)
    for key in ("refused", "skipped"):
        body_out[key] = [SightingReason(sighting_id=s, reason=r) for s, r in body_out[key]]
    return UnknownEnrolled(**body_out)
