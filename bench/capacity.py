"""Capacity model: how many cameras one core keeps up with, from the stage costs.

    ms per frame    = k * (g + p * (D + n * E))
    cameras / core  = 1000 / (fps * ms per frame)

g: decode + motion gate, every frame (ms); p: share of frames the gate passes; D: detector
ms per analysed frame; n: faces FaceNet embeds per analysed frame (those that do not reuse
their track's embedding); E: FaceNet ms per face; k: everything else as a ratio
(alignment, matching, tracking; in a cluster also Flink's serialization, bundles and JVMs).
All costs on one thread. bench/scaling.py measures g, D, E and the in-process k in the same
run as the cluster points and checks the model against them (``check``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from facerec.config import Settings
from facerec.records import DeadLetter

EMBEDDER_BATCH = "embedder_batch1"
"""Which embedder figure E is: most analysed frames reuse their face's embedding, so the
job's FaceNet calls carry one or two faces, not eight."""


def frame_cost_ms(
    base_ms: float,
    pass_share: float,
    faces_embedded: float,
    detector_ms: float,
    embedder_ms: float,
    overhead: float = 1.0,
) -> float:
    """CPU ms one camera frame costs: k * (g + p * (D + n * E))."""
    return overhead * (base_ms + pass_share * (detector_ms + faces_embedded * embedder_ms))


def cameras_per_core(fps: float, **costs: float) -> float:
    """Cameras one core keeps up with at ``fps`` each (``costs``: ``frame_cost_ms``'s)."""
    return 1000.0 / (fps * frame_cost_ms(**costs))


def check(result: dict[str, Any], fps: float) -> dict[str, Any]:
    """The model from the run's stage costs against each cluster run. k two ways: from the
    pipeline in one process (no Flink), and from the first cluster run (the TaskManagers'
    CPU time per frame: JVM, I/O and recognize workers); the first run's k then predicts the
    other runs, per core and in frames/s given the CPU their TaskManagers got."""
    costs, mix = result["stage_costs"], result["stage_costs"]["in_process"]
    inputs = {
        "base_ms": costs["decode_gate_ms_per_frame"],
        "pass_share": mix["pass_share"],
        "faces_embedded": mix["embedded_per_analysed_frame"],
        "detector_ms": costs["detector_ms_per_frame"],
        "embedder_ms": costs[EMBEDDER_BATCH]["ms_per_face"],
    }
    stages = frame_cost_ms(**inputs)
    k_pipeline = mix["ms_per_frame"] / stages
    out: dict[str, Any] = {
        "fps_per_camera": fps,
        "inputs": inputs,
        "stages_ms_per_frame_k1": round(stages, 2),
        "k_in_process": round(k_pipeline, 3),
        "cameras_per_core_in_process": round(
            cameras_per_core(fps, **inputs, overhead=k_pipeline), 2
        ),
    }
    runs = list(result["runs"].items())
    k_first = None
    for name, run in runs:
        sustained = run["sustained"]
        cpu_ms = sustained["cpu"]["cpu_ms_per_frame"]["taskmanagers_total"]
        cores = sustained["cpu"]["cores_busy"]["taskmanagers_total"]
        k = cpu_ms / stages
        k_first = k_first or k
        out[name] = {
            "k_cluster": round(k, 3),
            "cameras_per_core_measured": round(1000 / (fps * cpu_ms), 2),
            "cameras_per_core_predicted_from_first_run": round(
                cameras_per_core(fps, **inputs, overhead=k_first), 2
            ),
            "frames_per_s_measured": sustained["frames_per_s"],
            "taskmanager_cores_busy": cores,
            "frames_per_s_predicted_for_those_cores": round(cores * 1000 / (k_first * stages), 2),
            "frames_per_s_with_a_free_core_per_taskmanager": round(
                run["taskmanagers"] * 1000 / (k_first * stages), 2
            ),
        }
    if len(runs) == 2:
        (a, first), (b, second) = runs
        ratio = second["sustained"]["frames_per_s"] / first["sustained"]["frames_per_s"]
        out[f"frames_per_s_{b}_over_{a}"] = round(ratio, 2)
        per_core = [r["sustained"]["cpu"]["cores_busy"]["taskmanagers_total"] for _, r in runs]
        out[f"cores_busy_{b}_over_{a}"] = round(per_core[1] / per_core[0], 2)
    return out


def cpu_ms(fn: Any, repeats: int) -> float:
    """Median CPU ms of ``fn`` (this process's CPU time: one thread works, so it is the
    work's cost whatever else keeps the cores busy), after one warm-up call."""
    fn()
    spent = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        spent.append((time.process_time() - started) * 1000)
    return statistics.median(spent)


def stage_costs(settings: Settings, payloads: list[bytes]) -> dict[str, Any]:
    """On one thread in this process, in CPU ms: the SSD on 8 of the backlog's frames,
    FaceNet on batches of 1 and 8, decode + gate of every frame, and the whole pipeline
    (udfs/pipeline, as in bench/job.py's in_process) over the backlog."""
    import cv2
    import numpy as np

    from udfs.engine import FaceEngine
    from udfs.match import Matcher
    from udfs.motion import MotionGate
    from udfs.pipeline import RecognitionPipeline, decode_record, gate_frame

    engine = FaceEngine(settings)
    engine.warmup()
    records = [r for r in map(decode_record, payloads) if not isinstance(r, DeadLetter)]
    images = [
        image
        for r in records[:8]
        if (image := cv2.imdecode(np.frombuffer(r.jpeg, np.uint8), cv2.IMREAD_COLOR)) is not None
    ]
    detect = cpu_ms(lambda: engine.detector.detect(images), 6) / len(images)
    out: dict[str, Any] = {
        "cv2_threads": cv2.getNumThreads(),
        "frame_size": f"{images[0].shape[1]}x{images[0].shape[0]}",
        "detector_ms_per_frame": round(detect, 2),
    }
    rng = np.random.default_rng(1)
    for batch in (1, 8):
        crops = rng.standard_normal((batch, 160, 160, 3)).astype(np.float32)
        ms = cpu_ms(lambda crops=crops: engine.embedder.embed(crops), 8) / batch
        out[f"embedder_batch{batch}"] = {
            "ms_per_face": round(ms, 2),
            "faces_per_s": round(1000 / ms, 1),
        }

    def decode_and_gate() -> None:
        gates: dict[str, MotionGate] = {}
        for payload in payloads:
            record = decode_record(payload)
            if not isinstance(record, DeadLetter):
                gate = gates.setdefault(str(record.camera_id), MotionGate(settings.job.motion))
                gate_frame(gate, record)

    out["decode_gate_ms_per_frame"] = round(cpu_ms(decode_and_gate, 1) / len(payloads), 2)
    matcher = Matcher(engine.model_id, threshold=settings.match.threshold)
    matcher.load_snapshot(next(settings.snapshots_path().iterdir()))
    started, cpu_started = time.perf_counter(), time.process_time()
    result = RecognitionPipeline(settings, engine, matcher).process(payloads)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
    matcher.close()
    out["in_process"] = {
        "frames": len(payloads),
        **frame_mix([vars(s) for s in result.stats]),
        "ms_per_frame": round(cpu * 1000 / len(payloads), 2),
        "wall_ms_per_frame": round(wall * 1000 / len(payloads), 2),
    }
    return out


def frame_mix(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Gate pass share, shed frames, faces and embedded faces per analysed frame."""
    analysed = [s for s in stats if s["passed"] and not s.get("shed")]
    faces = sum(s["faces"] for s in analysed)
    embedded = faces - sum(s["reused"] for s in analysed)
    n = len(analysed) or 1
    return {
        "pass_share": round(sum(s["passed"] for s in stats) / (len(stats) or 1), 3),
        "shed": sum(1 for s in stats if s.get("shed")),
        "analysed": len(analysed),
        "faces_per_analysed_frame": round(faces / n, 3),
        "embedded_per_analysed_frame": round(embedded / n, 3),
    }
