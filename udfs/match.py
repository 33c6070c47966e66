"""Matching embeddings against an Annoy snapshot plus live enrollment deltas.

Used by the Flink job (broadcast state) and by the API. The matcher holds:

* one verified, memory-mapped snapshot (``facerec.snapshot_format``) covering the change log up to
  its manifest's ``max_change_seq``;
* enrollment deltas newer than that (searched exactly);
* tombstones: persons erased after the snapshot, filtered from results at once.

``apply`` consumes ``facerec.index`` messages; it is idempotent and drops what the loaded
snapshot already covers, so replays and at-least-once duplicates change nothing.

Negative templates: a face a reviewer rejected ("this is not X") is enrolled as a template
of the reserved person ``rejected:X`` (``negative_person_id``), stored, snapshotted and
published like any other template. When the nearest template of a face is a negative one,
the face is ``unknown``: it looks most like a face known not to be the person it matched.
The match then reports the nearest real person and its distance (audits), identity unknown.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facerec.config import MatchConfig
from facerec.errors import BadRecord, SnapshotMismatch
from facerec.models import EMBEDDING_DIM, FACENET_MODEL_ID
from facerec.records import UNKNOWN
from facerec.snapshot_format import LoadedSnapshot, load_snapshot, read_manifest

log = logging.getLogger(__name__)
STATE_VERSION = 1
_DEFAULTS = MatchConfig()
NEGATIVE_PREFIX = "rejected:"
"""Person ids of negative templates: ``rejected:<person_id>``."""


def negative_person_id(person_id: str) -> str:
    """The reserved person holding the faces rejected as ``person_id``."""
    if is_negative(person_id):
        raise ValueError(f"{person_id!r} is a negative person already")
    return NEGATIVE_PREFIX + person_id


def is_negative(person_id: str | None) -> bool:
    """Whether ``person_id`` holds negative templates (faces rejected as someone)."""
    return person_id is not None and person_id.startswith(NEGATIVE_PREFIX)


@dataclass(frozen=True)
class Match:
    identity: str
    """person_id, or ``facerec.records.UNKNOWN``."""
    distance: float
    """L2 distance between unit vectors of the best candidate (inf if none)."""
    score: float
    """Similarity in [0, 1]: 1 - distance**2 / 4 (cosine mapped to [0, 1])."""
    person_id: str | None
    """Best candidate even when above the threshold (audits)."""
    template_id: str | None


def similarity(distance: float) -> float:
    if not np.isfinite(distance):
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - distance * distance / 4.0)))


@dataclass(frozen=True)
class _Delta:
    person_id: str
    template_id: str
    seq: int
    vector: np.ndarray


class Matcher:
    def __init__(
        self,
        model_id: str,
        dim: int = EMBEDDING_DIM,
        threshold: float = _DEFAULTS.threshold,
        top_k: int = _DEFAULTS.top_k,
        search_k: int = _DEFAULTS.search_k,
    ) -> None:
        if not 0.0 < threshold < 2.0:
            raise ValueError(f"threshold must be in (0, 2) for unit vectors, got {threshold}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.model_id = model_id
        self.dim = dim
        self.threshold = float(threshold)
        self.top_k = top_k
        self.search_k = search_k
        self._snap: LoadedSnapshot | None = None
        self._deltas: dict[str, _Delta] = {}  # template_id -> delta
        self._tombstones: dict[str, int] = {}  # person_id -> seq of the deletion
        self._delta_list: list[_Delta] = []
        self._delta_matrix: np.ndarray | None = None
        self._excluded_items: int = 0

    # ------------------------------------------------------------------ properties
    @classmethod
    def from_config(
        cls, config: MatchConfig, model_id: str = FACENET_MODEL_ID, **overrides: Any
    ) -> Matcher:
        """A matcher with the configured threshold, top_k and search_k (``overrides`` win:
        a replay re-runs with the threshold recorded in the original events)."""
        values: dict[str, Any] = {
            "threshold": config.threshold,
            "top_k": config.top_k,
            "search_k": config.search_k,
        }
        return cls(model_id, **(values | overrides))

    @property
    def snapshot_id(self) -> str | None:
        return self._snap.snapshot_id if self._snap else None

    @property
    def manifest(self) -> dict[str, Any] | None:
        return self._snap.manifest if self._snap else None

    @property
    def max_change_seq(self) -> int:
        return self._snap.max_change_seq if self._snap else 0

    @property
    def delta_count(self) -> int:
        return len(self._deltas)

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    # ------------------------------------------------------------------ updates
    def load_snapshot(self, path: str | Path) -> None:
        """Verify and memory-map a snapshot; on any mismatch raise ``SnapshotMismatch`` and
        keep serving the previous one."""
        snap = load_snapshot(path, model_id=self.model_id, dim=self.dim)
        old, self._snap = self._snap, snap
        covered = snap.max_change_seq
        self._deltas = {k: d for k, d in self._deltas.items() if d.seq > covered}
        self._tombstones = {p: s for p, s in self._tombstones.items() if s > covered}
        self._refresh()
        if old is not None and old.path != snap.path:
            old.close()
        log.info(
            "matcher: snapshot %s loaded (%d templates), %d deltas and %d tombstones kept",
            snap.snapshot_id,
            snap.count,
            len(self._deltas),
            len(self._tombstones),
        )

    def apply(self, message: dict[str, Any]) -> str:
        """Apply one index message (already decoded); returns what it did."""
        try:
            kind = message["kind"]
            seq = int(message.get("seq", 0))
            if kind == "snapshot":
                return self._apply_snapshot(message)
            if kind == "enroll":
                return self._apply_enroll(message, seq)
            if kind == "delete":
                return self._apply_delete(str(message["person_id"]), seq)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRecord(f"index message is malformed ({type(exc).__name__}: {exc})") from exc
        raise BadRecord(f"index message kind {kind!r}; expected snapshot, enroll or delete")

    def _apply_snapshot(self, message: dict[str, Any]) -> str:
        manifest = message["manifest"]
        sid = manifest["snapshot_id"]
        if sid == self.snapshot_id:
            return f"snapshot {sid} already loaded"
        if self._snap is not None and int(manifest["max_change_seq"]) < self.max_change_seq:
            return (
                f"snapshot {sid} ignored: covers seq {manifest['max_change_seq']}, "
                f"older than loaded {self.snapshot_id} (seq {self.max_change_seq})"
            )
        if manifest.get("model_id") != self.model_id:
            raise SnapshotMismatch(
                f"snapshot {sid} is for model {manifest.get('model_id')!r}, matcher uses "
                f"{self.model_id!r}; keeping {self.snapshot_id}"
            )
        path = Path(message["path"])
        on_disk = read_manifest(path)["snapshot_id"]
        if on_disk != sid:
            raise SnapshotMismatch(f"message announces snapshot {sid} but {path} holds {on_disk}")
        self.load_snapshot(path)
        return f"snapshot {sid} loaded ({self._snap.count if self._snap else 0} templates)"

    def _apply_enroll(self, message: dict[str, Any], seq: int) -> str:
        tid, pid = str(message["template_id"]), str(message["person_id"])
        if message.get("model_id") != self.model_id:
            return f"enroll {tid} ignored: model {message.get('model_id')!r} != {self.model_id!r}"
        if seq <= self.max_change_seq:
            return f"enroll {tid} (seq {seq}) already in snapshot {self.snapshot_id}"
        if self._tombstones.get(pid, -1) > seq:
            return f"enroll {tid} (seq {seq}) ignored: person {pid} erased later"
        if tid in self._deltas:
            return f"enroll {tid} already applied"
        vector = np.asarray(message["vector"], dtype=np.float32).reshape(-1)
        if vector.shape != (self.dim,) or not np.all(np.isfinite(vector)):
            raise BadRecord(
                f"enroll {tid}: vector of {vector.shape[0]} values, expected {self.dim}"
            )
        self._deltas[tid] = _Delta(pid, tid, seq, vector)
        self._refresh()
        return f"enroll {tid} of {pid} (seq {seq}) added as delta"

    def _apply_delete(self, person_id: str, seq: int) -> str:
        if seq <= self.max_change_seq:
            return f"delete {person_id} (seq {seq}) already in snapshot {self.snapshot_id}"
        if self._tombstones.get(person_id, -1) >= seq:
            return f"delete {person_id} (seq {seq}) already applied"
        self._tombstones[person_id] = seq
        self._deltas = {
            k: d for k, d in self._deltas.items() if not (d.person_id == person_id and d.seq < seq)
        }
        self._refresh()
        return f"person {person_id} erased (seq {seq})"

    def _refresh(self) -> None:
        deltas = list(self._deltas.values())
        self._delta_list = deltas
        self._delta_matrix = np.stack([d.vector for d in deltas]) if deltas else None
        snap = self._snap
        if snap is not None and self._tombstones:
            self._excluded_items = sum(1 for p in snap.person_ids if p in self._tombstones)
        else:
            self._excluded_items = 0

    # ------------------------------------------------------------------ matching
    def match(
        self, vectors: np.ndarray, thresholds: float | Sequence[float] | None = None
    ) -> list[Match]:
        """``[N, dim]`` embeddings -> N matches, each decided with ``self.threshold`` or, when
        given, ``thresholds`` (one for all, or one per vector: a camera's own threshold)."""
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [N, {self.dim}], got {q.shape}")
        if thresholds is None:
            per = [self.threshold] * len(q)
        elif isinstance(thresholds, int | float):
            per = [float(thresholds)] * len(q)
        else:
            per = [float(t) for t in thresholds]
            if len(per) != len(q):
                raise ValueError(f"{len(per)} thresholds for {len(q)} vectors")
        for t in set(per):
            if not 0.0 < t < 2.0:
                raise ValueError(f"threshold must be in (0, 2) for unit vectors, got {t}")
        return [self._match_one(v, t) for v, t in zip(q, per, strict=True)]

    def _match_one(self, v: np.ndarray, threshold: float) -> Match:
        # the nearest template overall, and the nearest of a real (not negative) person
        near_d, near_p = np.inf, None
        best_d, best_p, best_t = np.inf, None, None

        def consider(dists: np.ndarray, person_of: Any, template_of: Any) -> None:
            nonlocal near_d, near_p, best_d, best_p, best_t
            for j in np.argsort(dists, kind="stable"):
                d, p = float(dists[j]), person_of(int(j))
                if d < near_d:
                    near_d, near_p = d, p
                if not is_negative(p):
                    if d < best_d:
                        best_d, best_p, best_t = d, p, template_of(int(j))
                    return  # the nearest positive of this batch is found

        snap = self._snap
        if snap is not None and snap.count:
            k = min(snap.count, self.top_k + self._excluded_items)
            items = snap.index.get_nns_by_vector(v, k, search_k=self.search_k)
            items = sorted(i for i in items if snap.person_ids[i] not in self._tombstones)
            if items:
                cand = np.asarray(snap.vectors[items])
                consider(
                    np.linalg.norm(cand - v, axis=1),
                    lambda j: snap.person_ids[items[j]],
                    lambda j: snap.template_ids[items[j]],
                )
        if self._delta_matrix is not None:
            deltas = self._delta_list
            consider(
                np.linalg.norm(self._delta_matrix - v, axis=1),
                lambda j: deltas[j].person_id,
                lambda j: deltas[j].template_id,
            )
        vetoed = is_negative(near_p)  # nearest to a face rejected as someone: unknown
        matched = best_p is not None and best_d <= threshold and not vetoed
        identity = best_p if matched and best_p is not None else UNKNOWN
        return Match(identity, best_d, similarity(best_d), best_p, best_t)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (vectors as base64 float32)."""
        return {
            "version": STATE_VERSION,
            "model_id": self.model_id,
            "dim": self.dim,
            "snapshot_path": str(self._snap.path) if self._snap else None,
            "manifest": self.manifest,
            "deltas": [
                {
                    "person_id": d.person_id,
                    "template_id": d.template_id,
                    "seq": d.seq,
                    "vector_b64": base64.b64encode(d.vector.astype(np.float32).tobytes()).decode(),
                }
                for d in self._deltas.values()
            ],
            "tombstones": dict(self._tombstones),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], *, strict: bool = False, **kwargs: Any) -> Matcher:
        """Rebuild a matcher from ``state()``. ``kwargs`` are constructor arguments from the
        current configuration (model_id, dim, threshold, top_k, search_k) and win over the
        state's model_id/dim.

        A state of another model id or dimension is discarded (an empty matcher; the next
        snapshot message fills it). A saved snapshot that no longer verifies (files gone or
        corrupt) raises ``SnapshotMismatch`` when ``strict``; otherwise it is logged and the
        matcher restarts with the deltas and tombstones only, until the next snapshot.
        """
        if state.get("version") != STATE_VERSION:
            raise BadRecord(
                f"matcher state version {state.get('version')}, expected {STATE_VERSION}"
            )
        kwargs.setdefault("model_id", state["model_id"])
        kwargs.setdefault("dim", int(state["dim"]))
        m = cls(**kwargs)
        if (state["model_id"], int(state["dim"])) != (m.model_id, m.dim):
            log.warning(
                "matcher state is for model %s dim %s; configured %s dim %d: starting empty",
                state["model_id"],
                state["dim"],
                m.model_id,
                m.dim,
            )
            return m
        if state.get("snapshot_path"):
            try:
                m.load_snapshot(state["snapshot_path"])
                expected = (state.get("manifest") or {}).get("snapshot_id")
                if expected and m.snapshot_id != expected:
                    raise SnapshotMismatch(
                        f"state names snapshot {expected}, "
                        f"{state['snapshot_path']} holds {m.snapshot_id}"
                    )
            except SnapshotMismatch as exc:
                if strict:
                    raise
                m.close()
                log.error("restoring matcher without its snapshot: %s", exc.message)
        m._tombstones = {str(p): int(s) for p, s in state.get("tombstones", {}).items()}
        for d in state.get("deltas", []):
            vec = np.frombuffer(base64.b64decode(d["vector_b64"]), dtype=np.float32).copy()
            m._deltas[d["template_id"]] = _Delta(
                d["person_id"], d["template_id"], int(d["seq"]), vec
            )
        m._refresh()
        return m

    def close(self) -> None:
        if self._snap is not None:
            self._snap.close()
            self._snap = None
