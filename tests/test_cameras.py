"""The camera reader (jobs/cameras.py) on real videos: a scene built from celebrity5 photos
and the shared street footage; and on a stream URL that does not open."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerec.config import CameraConfig, Settings, VideoSourceConfig
from facerec.records import FrameRecord
from jobs.cameras import CameraReader, plan_camera, source_kind
from jobs.services.process import free_port
from jobs.sources import LIVE_TICKS, SourceError, parse_video_source, tick_count
from jobs.walkthrough import Segment, write_face_video

SCENE_FPS = 10


@pytest.fixture(scope="module")
def scene(tmp_path_factory, celebrity5: Path) -> tuple[Path, int]:
    """A 10 fps video of three val photos sliding in and standing still; its frame count."""
    from udfs.evaluation import list_identities

    val = list_identities(celebrity5 / "val")
    segments = [Segment(n, val[n][0], moving_frames=5, static_frames=7) for n in sorted(val)[:3]]
    path = tmp_path_factory.mktemp("cameras") / "scene.avi"
    truth = write_face_video(path, segments, fps=SCENE_FPS)
    return path, len(truth)


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n


def camera(url: Path | str, **options) -> CameraConfig:
    return CameraConfig(camera_id="cam", url=str(url), region="lobby", **options)


def read_all(reader: CameraReader) -> list[FrameRecord]:
    try:
        return list(reader.records())
    finally:
        reader.close()


def image(record: FrameRecord) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(record.jpeg, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("0", "device"),
        ("12", "device"),
        ("rtsp://cam.local:554/stream", "stream"),
        ("http://10.0.0.7/video.mjpg", "stream"),
        ("/videos/lobby.mp4", "file"),
        ("relative/lobby.avi", "file"),
        ("file:///videos/lobby.mp4", "file"),
    ],
)
def test_given_url_when_classified_then_device_stream_or_file(url: str, kind: str) -> None:
    assert source_kind(url) == kind


def test_given_fps_cap_when_reading_file_then_every_other_frame_on_the_file_timeline(
    scene: tuple[Path, int],
) -> None:
    path, frames = scene
    stats = Stats()
    reader = CameraReader(camera(path, fps=5, jpeg_quality=70), epoch_ms=1234,
                          media_clock=True, stats=stats)
    records = read_all(reader)

    assert len(records) == (frames + 1) // 2
    assert stats.counts == {"read": frames, "dropped": frames // 2}
    assert [r.seq for r in records] == list(range(len(records)))
    assert [r.capture_ts - records[0].capture_ts for r in records[:4]] == [0, 200, 400, 600]
    assert records[3].frame_id == "cam:1234:000000003" and records[3].region == "lobby"
    assert image(records[1]).shape == (480, 640, 3) and records[1].width == 640


@pytest.mark.parametrize(("fps", "loop"), [(0, 1), (4, 1), (3, 2), (7, 3), (9.5, 1)])
def test_given_cap_and_loops_when_planned_then_plan_equals_frames_emitted(
    scene: tuple[Path, int], fps: float, loop: int
) -> None:
    path, _ = scene
    cam = camera(path, fps=fps, loop=loop)
    plan = plan_camera(cam)

    assert plan.frames == len(read_all(CameraReader(cam)))
    assert plan.fps == pytest.approx(fps or SCENE_FPS, rel=0.1)


def test_given_street_video_with_cap_when_planned_then_plan_equals_frames_emitted(
    street: Path,
) -> None:
    cam = camera(street, fps=3, loop=2)
    assert plan_camera(cam).frames == len(read_all(CameraReader(cam)))


def test_given_loop_count_when_reading_then_file_plays_that_often_with_same_frames(
    scene: tuple[Path, int],
) -> None:
    path, frames = scene
    records = read_all(CameraReader(camera(path, fps=0, loop=3)))

    assert len(records) == 3 * frames
    assert [r.seq for r in records] == list(range(3 * frames))
    # the job's frame ids for a file: epoch 0, so a restored job reads it under the same ids
    assert records[-1].frame_id == f"cam:0:{3 * frames - 1:09d}"
    assert records[frames + 4].jpeg == records[4].jpeg == records[2 * frames + 4].jpeg


def test_given_loop_forever_when_reading_then_unbounded_and_plays_on(
    scene: tuple[Path, int],
) -> None:
    path, frames = scene
    cam = camera(path, fps=0, loop=True)  # a YAML switch: true = forever
    assert cam.loop == 0 and not plan_camera(cam).bounded
    reader = CameraReader(cam)
    taken = [r for _, r in zip(range(2 * frames + 3), reader.records(), strict=False)]
    reader.close()
    assert len(taken) == 2 * frames + 3 and not reader.finished


def test_given_tick_numbers_when_read_by_seq_then_same_frames_as_in_order(
    scene: tuple[Path, int],
) -> None:
    path, _ = scene
    cam = camera(path, fps=4, loop=2)
    in_order = read_all(CameraReader(cam))
    reader = CameraReader(cam, paced=True)
    try:
        resumed = reader.read(9)  # a restored job resumes mid-file
        again = reader.read(2)  # ticks from before the position: start over
        last = reader.read(len(in_order) - 1)
        past_end = reader.read(len(in_order))
    finally:
        reader.close()

    assert resumed is not None and again is not None and last is not None
    assert (resumed.frame_id, resumed.jpeg) == (in_order[9].frame_id, in_order[9].jpeg)
    assert (again.frame_id, again.jpeg) == (in_order[2].frame_id, in_order[2].jpeg)
    assert last.jpeg == in_order[-1].jpeg and past_end is None and reader.finished


def test_given_realtime_when_reading_then_paced_at_file_rate_unless_paced_elsewhere(
    scene: tuple[Path, int],
) -> None:
    path, _ = scene
    cam = camera(path, fps=0, realtime=True)

    def seconds_for_ten(reader: CameraReader) -> float:
        started = time.monotonic()
        assert all(reader.next_record() is not None for _ in range(10))
        reader.close()
        return time.monotonic() - started

    assert seconds_for_ten(CameraReader(cam)) >= 0.85  # frames 0..9 at 10 fps: 0.9 s
    assert seconds_for_ten(CameraReader(cam, paced=True)) < 0.5


class RecordingStop(threading.Event):
    """A stop event that records each backoff wait instead of sleeping, and stops after
    ``attempts`` of them."""

    def __init__(self, attempts: int) -> None:
        super().__init__()
        self.attempts, self.waits = attempts, []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.attempts:
            self.set()
        return self.is_set()


def test_given_stream_that_does_not_open_when_reading_then_backoff_from_config() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/lobby"
    cam = camera(url, reconnect_initial_s=0.25, reconnect_max_s=1.5)
    stop, stats = RecordingStop(attempts=6), Stats()

    assert read_all(CameraReader(cam, stop=stop, stats=stats)) == []
    assert stop.waits == [0.25, 0.5, 1.0, 1.5, 1.5, 1.5]
    assert stats.counts == {"reconnects": 6}


def test_given_long_backoff_when_stopped_then_reader_returns_at_once() -> None:
    cam = camera(f"http://127.0.0.1:{free_port()}/cam.mjpg", reconnect_initial_s=30,
                 reconnect_max_s=60)
    stop = threading.Event()
    reader = CameraReader(cam, stop=stop)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (read_all(reader), done.set()), daemon=True)
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    stop.set()
    thread.join(timeout=5)

    assert done.is_set() and time.monotonic() - started < 3
    assert reader.finished


def test_given_video_options_when_camera_made_then_region_and_options_carry_over() -> None:
    video = VideoSourceConfig(region="site-{camera}", fps=6, loop=False, jpeg_quality=75,
                              reconnect_initial_s=2, reconnect_max_s=4)
    cam = video.camera("door", "rtsp://cam/door")

    assert (cam.camera_id, cam.url, cam.region) == ("door", "rtsp://cam/door", "site-door")
    assert (cam.fps, cam.loop, cam.jpeg_quality, cam.realtime) == (6, 1, 75, True)
    assert (cam.reconnect_initial_s, cam.reconnect_max_s) == (2, 4)
    assert CameraConfig(camera_id="c", url="0", region="r").fps == 10
    with pytest.raises(ValueError, match="reconnect_max_s"):
        camera("0", reconnect_initial_s=5, reconnect_max_s=1)


def test_given_folder_and_url_when_video_source_parsed_then_one_planned_camera_each(
    scene: tuple[Path, int], tmp_path: Path
) -> None:
    path, frames = scene
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("b side.avi", "a.avi"):
        (folder / name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not a video")
    settings = Settings(data_dir=tmp_path, job={"video": {"region": "r-{camera}", "loop": 2}})

    plans = parse_video_source(f"{folder},{path}", settings)
    assert [p.cam.camera_id for p in plans] == ["a", "b_side", "scene"]
    assert [p.cam.region for p in plans] == ["r-a", "r-b_side", "r-scene"]
    assert [p.frames for p in plans] == [2 * frames] * 3
    assert tick_count(plans) == 3 * 2 * frames

    twins = parse_video_source(f"{path},{path},rtsp://cam.local/door", settings)
    assert [p.cam.camera_id for p in twins] == ["scene", "scene-2", "door"]
    assert not twins[2].bounded and tick_count(twins) == LIVE_TICKS
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="broken.avi"):
        parse_video_source(str(broken), settings)
