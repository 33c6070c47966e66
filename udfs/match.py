"""Matching embeddings against an index snapshot plus live enrollment deltas.

Used by the Flink job (broadcast state) and by the API. The matcher holds:

* one verified, memory-mapped snapshot (``facerec.snapshot_format``) covering the change log up to
  its manifest's ``max_change_seq``;
* enrollment deltas newer than that (searched exactly);
* tombstones: persons erased after the snapshot, filtered from results at once.

A snapshot of at most ``exact_max_templates`` templates is searched exactly, the whole
micro-batch at once (one matrix product over the stored vectors): below that size exact
search is faster than the index (``bench/matching_scale.py`` measures the crossover).
Above it the snapshot's index (Annoy or hnsw, ``index_kind`` in its manifest) proposes
``top_k`` candidates. Either way the candidates are ranked on their true L2 distances.

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
        exact_max_templates: int = _DEFAULTS.exact_max_templates,
        hnsw_ef: int = _DEFAULTS.hnsw_ef,
        hnsw_threads: int = _DEFAULTS.hnsw_threads,
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
        self.exact_max_templates = exact_max_templates
        self.hnsw_ef = hnsw_ef
        self.hnsw_threads = hnsw_threads
        self._snap: LoadedSnapshot | None = None
        self._items_of: dict[str, list[int]] | None = None  # person -> snapshot items (lazy)
        self._negative: np.ndarray | None = None  # snapshot items of negative persons
        self._sq_norms: np.ndarray | None = None  # |v|^2 per snapshot item (exact search)
        self._vectors: np.ndarray = np.empty((0, dim), dtype=np.float32)  # the snapshot's
        self._excluded: np.ndarray | None = None  # snapshot items of erased persons
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
        """A matcher with the configured settings (``configured``; ``overrides`` win: a
        replay re-runs with the threshold recorded in the original events)."""
        return cls(model_id, **(cls.configured(config) | overrides))

    @staticmethod
    def configured(config: MatchConfig) -> dict[str, Any]:
        """The constructor arguments ``match.*`` sets: threshold, top_k, search_k,
        exact_max_templates, hnsw_ef and hnsw_threads."""
        return {
            "threshold": config.threshold,
            "top_k": config.top_k,
            "search_k": config.search_k,
            "exact_max_templates": config.exact_max_templates,
            "hnsw_ef": config.hnsw_ef,
            "hnsw_threads": config.hnsw_threads,
        }

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
        self._index_snapshot(snap)
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

    def _index_snapshot(self, snap: LoadedSnapshot) -> None:
        """The negative-template mask of a newly loaded snapshot."""
        negative = np.fromiter(
            (p.startswith(NEGATIVE_PREFIX) for p in snap.person_ids), dtype=bool, count=snap.count
        )
        self._negative = negative if negative.any() else None
        # a plain view of the memory map: np.memmap's own indexing costs per call
        self._vectors = np.asarray(snap.vectors)
        self._items_of = None  # built at the first erasure the snapshot predates
        self._sq_norms = None  # computed at the first exact search

    def _snapshot_items(self, person_id: str) -> list[int]:
        snap = self._snap
        if snap is None:
            return []
        if self._items_of is None:
            items_of: dict[str, list[int]] = {}
            for i, p in enumerate(snap.person_ids):
                items_of.setdefault(p, []).append(i)
            self._items_of = items_of
        return self._items_of.get(person_id, [])

    def _refresh(self) -> None:
        deltas = list(self._deltas.values())
        self._delta_list = deltas
        self._delta_matrix = np.stack([d.vector for d in deltas]) if deltas else None
        snap = self._snap
        gone = [i for p in self._tombstones for i in self._snapshot_items(p)]
        if snap is not None and gone:
            self._excluded = np.zeros(snap.count, dtype=bool)
            self._excluded[gone] = True
            self._excluded_items = int(self._excluded.sum())
        else:
            self._excluded = None
            self._excluded_items = 0

    @property
    def search_path(self) -> str:
        """How the snapshot is searched: ``exact``, or the index kind (``annoy``, ``hnsw``)."""
        snap = self._snap
        if snap is None or snap.searcher is None or snap.count <= self.exact_max_templates:
            return "exact"
        return snap.searcher.kind

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
        found = self._snapshot_candidates(q)
        return [self._match_one(v, t, c) for v, t, c in zip(q, per, found, strict=True)]

    def _snapshot_candidates(self, q: np.ndarray) -> list[np.ndarray]:
        """Per query, the snapshot items whose true distances decide (erased persons left
        out): exact search below ``exact_max_templates``, the index's top_k above."""
        snap = self._snap
        if snap is None or snap.count == 0 or len(q) == 0:
            return [np.empty(0, dtype=np.int64) for _ in range(len(q))]
        if self.search_path == "exact":
            if self._sq_norms is None:
                self._sq_norms = np.einsum("ij,ij->i", self._vectors, self._vectors)
            return exact_candidates(
                q, self._vectors, self._sq_norms, self.top_k, self._excluded, self._negative
            )
        assert snap.searcher is not None
        k = min(snap.count, self.top_k + self._excluded_items)
        found = snap.searcher.search(
            q, k, search_k=self.search_k, ef=self.hnsw_ef, threads=self.hnsw_threads
        )
        if self._excluded is not None:
            excluded = self._excluded
            found = [items[~excluded[items]] for items in found]
        return found

    def _match_one(self, v: np.ndarray, threshold: float, found: np.ndarray) -> Match:
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
        if snap is not None and len(found):
            # item order breaks distance ties, whichever path found the candidates
            items = [int(i) for i in np.sort(found)]
            if items:
                cand = self._vectors[items]
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
        self._items_of, self._negative, self._sq_norms = None, None, None
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._refresh()


def exact_candidates(
    queries: np.ndarray,
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    k: int,
    excluded: np.ndarray | None = None,
    negative: np.ndarray | None = None,
    chunk_elements: int = 1 << 23,
) -> list[np.ndarray]:
    """Per query the ``k`` items nearest by ``|v|^2 - 2 q.v`` (the squared L2 distance less
    ``|q|^2``: one matrix product per batch, which on unit vectors is ``2 - 2 Q V^T`` up to a
    constant), ``excluded`` items left out, plus the nearest item outside ``negative`` when it
    is not among them. Candidates only: the caller ranks them on true distances, so float
    error in the product never decides between near ties."""
    n = len(vectors)
    if n == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(len(queries))]
    kk = min(k, n)
    out: list[np.ndarray] = []
    step = max(1, chunk_elements // n)  # bounds the [batch, n] score matrix
    for s in range(0, len(queries), step):
        # [n, dim] @ [dim, b] streams the gallery once: 1.5x faster than Q @ V^T at b = 16
        scores = np.ascontiguousarray(
            (sq_norms[:, None] - 2.0 * (vectors @ queries[s : s + step].T)).T
        )
        if excluded is not None:
            scores[:, excluded] = np.inf
        if kk < n:
            top = np.argpartition(scores, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(n), scores.shape)
        pos = np.where(negative, np.inf, scores).argmin(axis=1) if negative is not None else None
        for r in range(len(scores)):
            row = scores[r]
            items = top[r][np.isfinite(row[top[r]])]
            if pos is not None and np.isfinite(row[pos[r]]) and pos[r] not in items:
                items = np.append(items, pos[r])
            out.append(items.astype(np.int64))
    return out
