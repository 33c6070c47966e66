"""Load shedding under a latency budget: plain Python, no Flink.

When cameras send more frames than the machine can analyse, a queue forms in front of the
detector and grows without bound, and every camera's latency grows with it. The job's
recognize operator (udfs/flink_functions.py) asks ``LoadShedder`` about each live frame that
passed the motion gate, before detection:

- A frame whose expected finish (now, plus what analysing it and the frames buffered before
  it is expected to cost) lies more than ``job.latency_budget_ms`` after its capture is shed.
  Shedding costs the gate check only, so the queue drains and the frames that are analysed
  end near the budget; the job analyses what it can instead of everything late.
- A frame already older than the budget when it passes the gate is shed: a queue has
  formed, and only shedding drains it.
- Fairness: every camera's frames age through the same queue, so each sheds the same share.
  On top, a camera that had no frame admitted for ``1 / job.min_analysed_fps`` of its own
  capture time gets its next frame analysed even when the analysis will end past the budget,
  so no camera goes blind. Only while the frame is still within the budget on arrival: a
  floor that admitted late frames too would, once cameras x floor exceeds what the machine
  analyses, rebuild the queue that shedding exists to drain. The floor counts capture time,
  not arrival: frames arrive in bursts (bundles, a queue), while a rate is promised per
  second of what the camera saw.
- Room for the floor: a frame the floor forces in ends past the budget, and under overload
  those are the dear frames (a camera whose track went stale, every face through FaceNet),
  so they alone put the p95 past the budget (measured: p95 227-273 ms for such frames at
  a 200 ms budget, 2x and 4x capacity). So a camera comes first from half its floor's gap on: its
  frame is analysed when it fits the budget, and when it does not, the camera reserves room
  for its next frame (expected one capture interval later): until that frame comes, another
  camera's frame is admitted only when analysing it still leaves the waiting camera's next
  frame within the budget. The queue in front of the waiting camera then drains and its
  frame fits; the floor forces a frame in only where no frame of it can fit (the time from
  capture to the operator plus one analysis exceeds the budget), or when the floor's whole
  gap passes all the same.
- The gate's keep-alive frames (someone standing still, re-checked) and a camera's first
  frame are never shed: under a load of moving scenes they are rare and they are the only
  look at still people.
- Frames that are not live (a recording read as fast as it decodes) and bounded reads (an
  audit, a backlog) are never shed: the caller does not ask about the first, and passes
  ``budget_ms=0`` for the second. Nor are the frames a restored job replays
  (``backlog_until_ms``): a frame handled before a failure must be handled the same way
  after it, or its events would be in the event store but never in an exactly-once topic.

The cost estimate is learned from the analysed batches themselves (exponentially weighted
means and spreads), so it follows the machine, the detector and the scene. It has two
parts, timed apart in each batch: what a frame costs without FaceNet (decoding, detection,
matching), and what one FaceNet pass costs. How many passes a frame takes depends on its
camera's recent frames: a frame that continues its camera's previous analysed frame
(within ``job.track.max_gap_ms``) while that camera's last embedding is still reusable
(within ``job.track.reuse_ms``) mostly takes none, its faces reusing their track's
embedding (udfs/track.py); any other frame's faces are embedded. The shedder learns the
passes per frame of the two kinds apart and plans each frame with its own kind. With one
figure for both, an overloaded job could settle where only the floor's isolated, dear
frames were analysed: they kept the estimate high, so the cheap frames that follow them
were shed too (measured: a cold job at 2x its capacity analysed 0.20 of it). A reusing
frame whose passes were never measured is planned with none, so a floor frame is followed
by its camera's next frames when they fit.

Admission plans with the mean plus two spreads: a frame admitted on the mean alone would
end past the budget about every other time it sits near the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from facerec.config import TrackConfig
from udfs.track import in_reuse_time

OVER_BUDGET = "over_budget"
"""The frame could no longer be analysed within the latency budget."""
NEVER_SHED = frozenset({"first", "keepalive"})
"""Gate reasons whose frames are analysed under any load."""
COST_WEIGHT = 0.2
"""Weight of the newest batch in the running estimates."""
PLANNING_SPREADS = 2.0
"""Standard deviations of a cost added to its mean when admitting a frame."""
PRIORITY_AFTER = 0.5
"""Share of the floor's gap (``1 / min_analysed_fps``) without an admitted frame after which
a camera's frames come first and it may reserve room for its next frame."""
REACH_WINDOW = 64
"""Frames over which the shortest time from capture to the operator is taken: how soon a
frame can reach the operator when nothing queues in front of it."""


@dataclass
class RunningEstimate:
    """Exponentially weighted mean and variance of a measured quantity (Finch, "Incremental
    calculation of weighted mean and variance", 2009)."""

    mean: float | None = None
    """None until the first measurement."""
    var: float = 0.0

    def add(self, value: float) -> None:
        if self.mean is None:
            self.mean = value
            return
        diff = value - self.mean
        self.mean += COST_WEIGHT * diff
        self.var = (1 - COST_WEIGHT) * (self.var + COST_WEIGHT * diff**2)


@dataclass(frozen=True)
class AnalysedFrame:
    """One frame of an analysed batch, as the shedder learns from it."""

    camera_id: str
    capture_ts: int
    embedded: int
    """FaceNet passes its faces took (faces that reused an earlier embedding take none)."""


@dataclass(frozen=True)
class Reservation:
    """Room kept for a waiting camera's next frame."""

    since: int
    """When the camera began to wait (epoch ms, the operator's clock): an earlier waiter's
    frame may take a later one's room, not the other way round, so two waiting cameras
    cannot hold each other out."""
    next_capture: int
    """When its next frame is expected to be captured (epoch ms)."""
    cost_ms: float
    """What analysing that frame is planned to cost."""


@dataclass
class LoadShedder:
    """Shedding decisions of one operator instance. ``budget_ms`` 0 = never shed."""

    budget_ms: int
    min_analysed_fps: float = 0.0
    track: TrackConfig | None = None
    """When a frame's faces may reuse earlier embeddings (None, or ``reuse_ms`` 0: never)."""
    backlog_until_ms: int = 0
    """Frames captured before this time (epoch ms) are a backlog, never shed: set when a
    restored job starts, so the frames it replays get the outcome they got before."""
    frame_cost: RunningEstimate = field(default_factory=RunningEstimate)
    """Milliseconds a frame costs besides its FaceNet passes."""
    pass_cost: RunningEstimate = field(default_factory=RunningEstimate)
    """Milliseconds of one FaceNet pass (a batch's FaceNet time over its passes)."""
    passes: dict[bool, RunningEstimate] = field(
        default_factory=lambda: {True: RunningEstimate(), False: RunningEstimate()}
    )
    """FaceNet passes per frame, for frames whose faces may reuse embeddings (True) and for
    the others (False)."""
    passes_any: RunningEstimate = field(default_factory=RunningEstimate)
    """FaceNet passes per frame over all frames: the frames buffered before a frame are
    planned with it, their kinds being unknown to the shedder."""

    def __post_init__(self) -> None:
        # camera id -> capture time (epoch ms) of its last admitted frame, its last analysed
        # frame, and its last analysed frame that took a FaceNet pass
        self._last_admitted: dict[str, int] = {}
        self._last_analysed: dict[str, int] = {}
        self._last_embedded: dict[str, int] = {}
        # camera id -> capture time of its last frame asked about, and the interval to it
        self._last_seen: dict[str, int] = {}
        self._interval: dict[str, int] = {}
        self._ages: deque[int] = deque(maxlen=REACH_WINDOW)
        self.reservations: dict[str, Reservation] = {}
        """Cameras waiting for a frame that fits, by camera id."""

    def planning_cost_ms(self, reusing: bool | None = None) -> float:
        """What admitting a frame assumes it costs: the frame cost plus its kind's FaceNet
        passes times a pass's cost, mean plus ``PLANNING_SPREADS`` standard deviations of
        that sum (the three taken as independent). ``reusing`` None: a frame of either
        kind, in the mix analysed so far."""
        if self.frame_cost.mean is None:
            return 0.0
        passes = self.passes_any if reusing is None else self.passes[reusing]
        n, n_var = passes.mean or 0.0, passes.var
        c, c_var = self.pass_cost.mean or 0.0, self.pass_cost.var
        mean = self.frame_cost.mean + n * c
        var = self.frame_cost.var + n_var * c**2 + n**2 * c_var + n_var * c_var
        return mean + PLANNING_SPREADS * var**0.5

    def _reuses(self, previous: int | None, camera_id: str, capture_ts: int) -> bool:
        """Whether a frame of ``camera_id`` captured at ``capture_ts``, its camera's previous
        frame captured at ``previous``, finds embeddings to reuse (udfs/track.py's rule)."""
        embedded = self._last_embedded.get(camera_id)
        return (
            self.track is not None
            and previous is not None
            and embedded is not None
            and in_reuse_time(self.track, seen_ms=previous, embedded_ms=embedded, ts=capture_ts)
        )

    @property
    def min_gap_ms(self) -> float | None:
        """Longest a camera waits for an analysed frame while shedding (None: no floor)."""
        return 1000.0 / self.min_analysed_fps if self.min_analysed_fps > 0 else None

    def shed_reason(
        self, *, camera_id: str, capture_ts: int, gate_reason: str, buffered: int, now: int
    ) -> str | None:
        """Why this frame (it passed the gate at ``now``, ``buffered`` frames wait before
        it) is shed, or None when it is to be analysed (it then counts as admitted)."""
        if self._admits(camera_id, capture_ts, gate_reason, buffered, now):
            self._last_admitted[camera_id] = capture_ts
            self.reservations.pop(camera_id, None)
            return None
        return OVER_BUDGET

    def _admits(
        self, camera_id: str, capture_ts: int, gate_reason: str, buffered: int, now: int
    ) -> bool:
        if self.budget_ms <= 0 or gate_reason in NEVER_SHED or capture_ts < self.backlog_until_ms:
            return True
        self._note_arrival(camera_id, capture_ts, now)
        if now - capture_ts > self.budget_ms:
            if camera_id in self.reservations:  # it still waits: for the frame after this one
                self._reserve(camera_id, capture_ts, now)
            return False
        last = self._last_admitted.get(camera_id)
        reusing = self._reuses(last, camera_id, capture_ts)
        expected_done = now + buffered * self.planning_cost_ms() + self.planning_cost_ms(reusing)
        fits = expected_done - capture_ts <= self.budget_ms
        if fits and not self._takes_reserved_room(camera_id, expected_done, now):
            return True
        floor = self.min_gap_ms
        if floor is None or (last is not None and capture_ts - last < floor * PRIORITY_AFTER):
            return False
        if last is None or capture_ts - last >= floor:
            return True
        self._reserve(camera_id, capture_ts, now)
        return False

    def _note_arrival(self, camera_id: str, capture_ts: int, now: int) -> None:
        previous = self._last_seen.get(camera_id)
        if previous is not None and capture_ts > previous:
            self._interval[camera_id] = capture_ts - previous
        self._last_seen[camera_id] = capture_ts
        self._ages.append(now - capture_ts)

    @property
    def reach_ms(self) -> int:
        """The shortest recent time from capture to the operator (0 before any frame)."""
        return min(self._ages, default=0)

    def _reserve(self, camera_id: str, capture_ts: int, now: int) -> None:
        """Keep room for the camera's next frame, if it has a known rate and such a frame can
        fit the budget at all (otherwise the floor admits one late)."""
        interval = self._interval.get(camera_id)
        if interval is None:
            return
        next_capture = capture_ts + interval
        reusing = self._reuses(self._last_admitted.get(camera_id), camera_id, next_capture)
        cost = self.planning_cost_ms(reusing)
        if self.reach_ms + cost > self.budget_ms:
            return
        earlier = self.reservations.get(camera_id)
        since = now if earlier is None else earlier.since
        self.reservations[camera_id] = Reservation(since, next_capture, cost)

    def _takes_reserved_room(self, camera_id: str, expected_done: float, now: int) -> bool:
        """Whether a frame of ``camera_id`` ending at ``expected_done`` would push the
        reserved next frame of a camera that began waiting before it past the budget."""
        own = self.reservations.get(camera_id)
        reach = self.reach_ms
        for waiting, room in list(self.reservations.items()):
            if now - room.next_capture > self.budget_ms:
                # that frame came and was too late, or never came (the camera went still,
                # its frames gated out): the room is no longer of use
                del self.reservations[waiting]
                continue
            if waiting == camera_id or (own is not None and room.since >= own.since):
                continue
            start = max(expected_done, room.next_capture + reach)
            if start + room.cost_ms - room.next_capture > self.budget_ms:
                return True
        return False

    def observe(
        self,
        frames: int,
        elapsed_ms: float,
        *,
        embed_ms: float = 0.0,
        analysed: Sequence[AnalysedFrame] = (),
    ) -> None:
        """A batch of ``frames`` took ``elapsed_ms`` from decoding to matching, of which
        ``embed_ms`` aligning and embedding faces; ``analysed``: its frames that decoded."""
        if frames <= 0:
            return
        passes = sum(f.embedded for f in analysed)
        if passes:
            self.pass_cost.add(embed_ms / passes)
            self.frame_cost.add((elapsed_ms - embed_ms) / frames)
        else:  # no FaceNet pass: what the embedding step took is the frames' own cost
            self.frame_cost.add(elapsed_ms / frames)
        for frame in sorted(analysed, key=lambda f: f.capture_ts):
            camera = frame.camera_id
            reusing = self._reuses(self._last_analysed.get(camera), camera, frame.capture_ts)
            self.passes[reusing].add(frame.embedded)
            self.passes_any.add(frame.embedded)
            self._last_analysed[camera] = frame.capture_ts
            if frame.embedded:
                self._last_embedded[camera] = frame.capture_ts
