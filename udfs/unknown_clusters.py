"""Incremental clustering of unknown faces: the strangers who keep coming back, grouped so
that someone can name them (``index_builder.unknowns`` keeps the members and their crops).

Plain numpy, no I/O. Faces are L2-normalised embeddings (FaceNet, 512-d) and distances are
Euclidean between unit vectors, the scale of ``match.threshold``: ``threshold`` here is the
distance at which a face is taken for the same person as a template.

**Linkage: average, on squared distances.** A face joins a cluster when its root mean
square distance to the cluster's members is within ``threshold``; among several such
clusters, the one with the smallest RMS distance (ties: the older id). Else it starts a
cluster. Unit vectors make this cheap and exact: ``mean_i |x - m_i|^2 = 2 - 2 x . S / n``
with ``S`` the sum of the ``n`` members, so a cluster is its sum vector and count, and a
face is compared with every cluster in one matrix-vector product.

Why average and not nearest-member (single) linkage: with single linkage a face joins
whenever *one* member is within the threshold, so one stranger who looks like one face of
another stranger chains the two people together, and every later face of either extends
the chain. Measured on real faces embedded as sightings are (photo -> detector + O-Net crop
-> JPEG -> ``FaceEngine.cropped_face``), inserted in 4 random orders, threshold 0.90; 781
LFW faces: 120 people with 2-6 photos each plus 300 people seen once (sampled with seed 7):

==========================================  ===============  ===========  ===================
linkage (merging clusters a face bridges)   clusters mixing  faces of     clusters per person
                                            two people       a minority   (people >= 2 faces)
==========================================  ===============  ===========  ===================
single (nearest member within 0.90)         17               80           1.17 (max 3)
nearest member and mean face within 0.90    13.25            49           1.18 (max 3)
average, squared distances (this module)    8.75 (max 9)     10.75        1.24 (max 4)
==========================================  ===============  ===========  ===================

The faces in a minority (the harm: enrolling such a cluster gives a person a stranger's
face) drop from 80 to 11. What is left is the floor of any rule at 0.90: pairs of strangers
within 0.90 of each other (82 of the 304,000 pairs here), a few of which meet while both
are alone. Its cost is fragmentation on varied photos: celebrity5's 108 acceptable photos
(5 people, 15-25 photos each, spanning decades) make 5.7 clusters per person (single
linkage: 3.0; none mixed under either rule); sightings of a person at one site vary less.
The threshold trades one for the other: at 0.85, 3.5 mixed clusters and 1.46 clusters per
person on LFW; at 1.0, 53 mixed clusters. Adding a face costs 1-4 ms with 400 clusters.

**A face that bridges two clusters** (within the threshold of both) merges them when the
two clusters are within the threshold of each other by the same linkage (RMS distance
between their members, ``2 - 2 Sa . Sb / (na nb)``), the older id surviving: a person first
seen from two angles becomes one cluster once a face in between arrives, and the id a
reviewer has seen longest stays valid. Two clusters that are each near the bridging face
but not near each other stay apart: that is the chain single linkage would make. (Never
merging, the same LFW faces make 1.34 clusters per person instead of 1.24, with as many
mixed clusters.)

Deterministic given the insertion order. Ids are never reused. Removing a member (it was
named, or it expired) leaves the others where they are: a cluster is never split, so ids
stay stable for whoever is looking at them. A member whose face changes (a better crop)
stays in its cluster while it still fits it.

Memory: one float32 vector per member and one float64 sum per cluster (about 2 KB + 4 KB
for a stranger seen once): 100,000 unknown sightings take about 600 MB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Where ``add`` or ``update`` put a face."""

    key: str
    cluster_id: int
    created: bool
    """The face started a new cluster."""
    merged: tuple[int, ...] = ()
    """Clusters absorbed into ``cluster_id`` (their ids are gone)."""
    left: int | None = None
    """``update``: the cluster the face moved out of (None when it stayed)."""


def _unit(vector: np.ndarray, dim: int | None) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"embedding has {v.shape[0]} values; the clusters hold {dim}")
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("embedding must be finite and non-zero")
    return v / norm


class UnknownClusters:
    """Clusters of faces keyed by a caller's id (a sighting id). Not thread-safe: the caller
    serialises access."""

    def __init__(self, threshold: float, *, next_id: int = 1) -> None:
        if not 0.0 < threshold < 2.0:
            raise ValueError(f"threshold must be in (0, 2); got {threshold}")
        self.threshold = float(threshold)
        self._min_dot = 1.0 - self.threshold**2 / 2.0
        """x . S / n at the threshold: mean squared distance 2 - 2 x . S / n = threshold^2."""
        self._next_id = int(next_id)
        self._dim: int | None = None
        self._vectors: dict[str, np.ndarray] = {}
        self._cluster_of: dict[str, int] = {}
        self._members: dict[int, dict[str, None]] = {}  # ordered sets: insertion order
        self._row: dict[int, int] = {}
        self._ids = np.zeros(0, dtype=np.int64)  # row -> cluster id, -1 for a free row
        self._sums = np.zeros((0, 0))
        self._counts = np.zeros(0, dtype=np.int64)
        self._free: list[int] = []

    # ------------------------------------------------------------------ reading
    @property
    def next_id(self) -> int:
        """The id the next new cluster gets (persist it to keep ids unique across restarts)."""
        return self._next_id

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, key: object) -> bool:
        return key in self._vectors

    def cluster_of(self, key: str) -> int | None:
        return self._cluster_of.get(key)

    def cluster_ids(self) -> list[int]:
        return sorted(self._members)

    def members(self, cluster_id: int) -> list[str]:
        """The cluster's keys in the order they joined ([] for no such cluster)."""
        return list(self._members.get(cluster_id, ()))

    def vector(self, key: str) -> np.ndarray:
        return self._vectors[key]

    def distance(self, vector: np.ndarray, cluster_id: int) -> float:
        """RMS distance of ``vector`` to the cluster's members (the linkage)."""
        x = _unit(vector, self._dim)
        row = self._row[cluster_id]
        dot = float(self._sums[row] @ x) / int(self._counts[row])
        return float(np.sqrt(max(2.0 - 2.0 * dot, 0.0)))

    # ------------------------------------------------------------------ changing
    def add(self, key: str, vector: np.ndarray) -> Placement:
        """Place a new face: the cluster it fits best, else a new one; clusters it bridges
        merge when they fit each other (module docstring)."""
        if key in self._vectors:
            raise KeyError(f"{key!r} is clustered already; use update")
        x = _unit(vector, self._dim)
        self._dim = x.shape[0]
        fits = self._fitting(x)
        if not fits:
            cid = self._new_cluster()
            self._join(key, x, cid)
            return Placement(key, cid, created=True)
        self._join(key, x, fits[0])
        cid, merged = self._merge_bridged(fits[0], fits[1:])
        return Placement(key, cid, created=False, merged=merged)

    def update(self, key: str, vector: np.ndarray) -> Placement:
        """A member's face changed (a better crop, another model): it stays in its cluster
        while it fits the other members (or has none), else it is placed again as by
        ``add`` and leaves its cluster."""
        old = self._cluster_of[key]
        x = _unit(vector, self._dim)
        self._leave(key)
        row = self._row.get(old)
        if row is None:  # it was alone: its cluster keeps its id unless it now fits another
            fits = self._fitting(x)
            cid = fits[0] if fits else old
            if cid == old:
                self._members[old] = {}
                self._row[old] = self._take_row(old)
                self._join(key, x, old)
                return Placement(key, old, created=False)
            self._join(key, x, cid)
            cid, merged = self._merge_bridged(cid, fits[1:])
            return Placement(key, cid, False, merged, left=old)
        if float(self._sums[row] @ x) / int(self._counts[row]) >= self._min_dot:
            self._join(key, x, old)
            return Placement(key, old, created=False)
        placed = self.add(key, x)
        return Placement(key, placed.cluster_id, placed.created, placed.merged, left=old)

    def remove(self, key: str) -> int | None:
        """The face leaves (named, expired); its cluster id, or None if it was not here. An
        emptied cluster is gone; the others are never split."""
        if key not in self._vectors:
            return None
        cid = self._cluster_of[key]
        self._leave(key)
        return cid

    def remove_cluster(self, cluster_id: int) -> list[str]:
        """Every member leaves (the cluster was enrolled); their keys."""
        keys = self.members(cluster_id)
        for key in keys:
            self._leave(key)
        return keys

    @classmethod
    def restore(
        cls,
        threshold: float,
        members: Iterable[tuple[str, int, np.ndarray]],
        *,
        next_id: int,
    ) -> UnknownClusters:
        """Clusters as they were saved: ``(key, cluster id, vector)`` in the order they
        joined, without clustering again (the ids a reviewer saw stay)."""
        clusters = cls(threshold, next_id=next_id)
        for key, cid, vector in members:
            if key in clusters._vectors:
                raise KeyError(f"{key!r} is given twice")
            x = _unit(vector, clusters._dim)
            clusters._dim = x.shape[0]
            if cid not in clusters._row:
                clusters._members[cid] = {}
                clusters._row[cid] = clusters._take_row(cid)
            clusters._join(key, x, cid)
            clusters._next_id = max(clusters._next_id, cid + 1)
        return clusters

    # ------------------------------------------------------------------ internals
    def _fitting(self, x: np.ndarray) -> list[int]:
        """Ids of the clusters ``x`` is within the threshold of, best (smallest RMS
        distance) first, ties by the older id."""
        if not self._row:
            return []
        # over every row, free ones included (zero sum, zero count): no copy of the matrix
        dots = (self._sums @ x) / np.maximum(self._counts, 1)
        rows = np.flatnonzero((self._ids >= 0) & (dots >= self._min_dot))
        ids = self._ids[rows]
        order = np.lexsort((ids, -dots[rows]))
        return [int(i) for i in ids[order]]

    def _merge_bridged(self, cid: int, others: list[int]) -> tuple[int, tuple[int, ...]]:
        """Merge ``others`` (clusters the new face also fits, best first) into ``cid`` when
        they fit it; the oldest id survives. The surviving id, and the absorbed ones."""
        absorbed: list[int] = []
        for other in others:
            if other not in self._row:
                continue
            a, b = self._row[cid], self._row[other]
            cross = float(self._sums[a] @ self._sums[b]) / (
                int(self._counts[a]) * int(self._counts[b])
            )
            if cross < self._min_dot:
                continue
            keep, gone = min(cid, other), max(cid, other)
            self._absorb(keep, gone)
            absorbed.append(gone)
            cid = keep
        return cid, tuple(absorbed)

    def _absorb(self, keep: int, gone: int) -> None:
        k, g = self._row[keep], self._row.pop(gone)
        self._sums[k] += self._sums[g]
        self._counts[k] += self._counts[g]
        for key in self._members[gone]:
            self._cluster_of[key] = keep
        self._members[keep].update(self._members.pop(gone))
        self._release_row(g)

    def _new_cluster(self) -> int:
        cid = self._next_id
        self._next_id += 1
        self._members[cid] = {}
        self._row[cid] = self._take_row(cid)
        return cid

    def _join(self, key: str, x: np.ndarray, cid: int) -> None:
        row = self._row[cid]
        kept = x.astype(np.float32)
        # the sum gets the vector as kept, so that leaving subtracts exactly what was added
        self._sums[row] += kept
        self._counts[row] += 1
        self._vectors[key] = kept
        self._cluster_of[key] = cid
        self._members[cid][key] = None

    def _leave(self, key: str) -> None:
        cid = self._cluster_of.pop(key)
        x = self._vectors.pop(key).astype(np.float64)
        del self._members[cid][key]
        row = self._row[cid]
        if not self._members[cid]:
            del self._members[cid], self._row[cid]
            self._release_row(row)
            return
        self._sums[row] -= x
        self._counts[row] -= 1

    def _take_row(self, cid: int) -> int:
        if self._free:
            row = self._free.pop()
        else:
            row = len(self._ids)
            grow = max(16, row)
            dim = self._dim or 0
            self._ids = np.concatenate([self._ids, np.full(grow, -1, np.int64)])
            self._counts = np.concatenate([self._counts, np.zeros(grow, np.int64)])
            sums = np.zeros((row + grow, dim))
            if row:
                sums[:row] = self._sums
            self._sums = sums
            self._free = list(range(row + grow - 1, row, -1))
        self._ids[row] = cid
        self._sums[row] = 0.0
        self._counts[row] = 0
        return row

    def _release_row(self, row: int) -> None:
        self._ids[row] = -1
        self._sums[row] = 0.0
        self._counts[row] = 0
        self._free.append(row)


__all__ = ["Placement", "UnknownClusters"]
