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
- The gate's keep-alive frames (someone standing still, re-checked) and a camera's first
  frame are never shed: under a load of moving scenes they are rare and they are the only
  look at still people.
- Frames that are not live (a recording read as fast as it decodes) and bounded reads (an
  audit, a backlog) are never shed: the caller does not ask about the first, and passes
  ``budget_ms=0`` for the second. Nor are the frames a restored job replays
  (``backlog_until_ms``): a frame handled before a failure must be handled the same way
  after it, or its events would be in the event store but never in an exactly-once topic.

The cost estimate is learned from the analysed batches themselves (exponentially weighted
mean and spread of milliseconds per frame), so it follows the machine, the detector and the
scene. Admission plans with the mean plus two spreads: a frame admitted on the mean alone
would end past the budget about every other time it sits near the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

OVER_BUDGET = "over_budget"
"""The frame could no longer be analysed within the latency budget."""
NEVER_SHED = frozenset({"first", "keepalive"})
"""Gate reasons whose frames are analysed under any load."""
COST_WEIGHT = 0.2
"""Weight of the newest batch in the running cost estimate."""
PLANNING_SPREADS = 2.0
"""Standard deviations of the cost added to its mean when admitting a frame."""


@dataclass
class LoadShedder:
    """Shedding decisions of one operator instance. ``budget_ms`` 0 = never shed."""

    budget_ms: int
    min_analysed_fps: float = 0.0
    frame_cost_ms: float | None = None
    """Running mean of the analysis cost of one frame (None until a batch was timed)."""
    frame_cost_var: float = 0.0
    """Running variance of that cost (ms squared)."""
    backlog_until_ms: int = 0
    """Frames captured before this time (epoch ms) are a backlog, never shed: set when a
    restored job starts, so the frames it replays get the outcome they got before."""

    @property
    def planning_cost_ms(self) -> float:
        """What admitting a frame assumes it costs: the mean plus ``PLANNING_SPREADS``
        standard deviations (0 before the first batch)."""
        if self.frame_cost_ms is None:
            return 0.0
        return self.frame_cost_ms + PLANNING_SPREADS * self.frame_cost_var**0.5

    def __post_init__(self) -> None:
        self._last_admitted: dict[str, int] = {}  # camera id -> capture time, epoch ms

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
            return None
        return OVER_BUDGET

    def _admits(
        self, camera_id: str, capture_ts: int, gate_reason: str, buffered: int, now: int
    ) -> bool:
        if self.budget_ms <= 0 or gate_reason in NEVER_SHED or capture_ts < self.backlog_until_ms:
            return True
        if now - capture_ts > self.budget_ms:
            return False
        expected_done = now + (buffered + 1) * self.planning_cost_ms
        if expected_done - capture_ts <= self.budget_ms:
            return True
        floor = self.min_gap_ms
        last = self._last_admitted.get(camera_id)
        return floor is not None and (last is None or capture_ts - last >= floor)

    def observe(self, frames: int, elapsed_ms: float) -> None:
        """A batch of ``frames`` took ``elapsed_ms`` from decoding to matching."""
        if frames <= 0:
            return
        per_frame = elapsed_ms / frames
        if self.frame_cost_ms is None:
            self.frame_cost_ms = per_frame
            return
        # exponentially weighted mean and variance (Finch, "Incremental calculation of
        # weighted mean and variance", 2009)
        diff = per_frame - self.frame_cost_ms
        self.frame_cost_ms += COST_WEIGHT * diff
        self.frame_cost_var = (1 - COST_WEIGHT) * (self.frame_cost_var + COST_WEIGHT * diff**2)
