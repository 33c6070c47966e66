"""Open-set identification at gallery sizes (udfs/open_set.py, `facerec eval`) and per-camera
match thresholds: the FNIR/FPIR arithmetic on hand-made distances and vectors with known
answers, the protocol's draws, the embedding cache, a small run on real faces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from facerec.config import CameraConfig, Settings, VideoSourceConfig
from facerec.records import UNKNOWN, index_message
from udfs.match import Matcher
from udfs.open_set import (
    OpenSetScores,
    embed_cached,
    format_open_set,
    group_by_identity,
    load_cached,
    open_set_protocol,
    summarize,
    sweep,
)
from udfs.pipeline import FaceCandidate, to_events

DIM = 64


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def basis(i: int, dim: int = 8) -> np.ndarray:
    e = np.zeros(dim, np.float32)
    e[i] = 1.0
    return e


def clusters(n_pool: int, n_single: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Pool identities with 2-6 images and singletons, tight clusters around random
    directions (nearest other identity at distance ~1.4)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_pool + n_single):
        n = int(rng.integers(2, 7)) if i < n_pool else 1
        centre = rng.standard_normal(DIM)
        out[f"id{i:03d}"] = unit(centre + 0.05 * rng.standard_normal((n, DIM)))
    return out


# ------------------------------------------------------------------ arithmetic
def scores(mated, correct, nonmated) -> OpenSetScores:
    return OpenSetScores(
        n_enrolled=2,
        seed=0,
        gallery_templates=2,
        mated_distance=np.asarray(mated, float),
        mated_correct=np.asarray(correct, bool),
        nonmated_distance=np.asarray(nonmated, float),
    )


def test_given_known_distances_when_rates_computed_then_exact():
    s = scores([0.2, 0.5, 0.9, np.inf], [True, True, False, False], [0.3, 0.8, 1.2, 1.5])
    # a mated probe counts only when its nearest template is its own AND within threshold
    assert s.fnir(0.85) == 0.5 and s.fpir(0.85) == 0.5
    assert s.fnir(0.1) == 1.0 and s.fpir(0.1) == 0.0
    assert s.fnir(2.0) == 0.5 and s.fpir(2.0) == 1.0  # the wrong-person probe never counts
    # FPIR 25%: one of four non-mated probes may pass -> just below the second closest (0.8)
    t = s.threshold_at_fpir(0.25)
    assert 0.79 < t < 0.8 and s.fpir(t) == 0.25 and s.fnir_at_fpir(0.25) == 0.5
    # FPIR 0: just below the closest non-mated probe -> only the 0.2 probe is named
    assert s.threshold_at_fpir(0.0) < 0.3 and s.fnir_at_fpir(0.0) == 0.75
    assert math.isinf(s.threshold_at_fpir(1.0))
    fpir, fnir, thr = s.curve()
    assert np.all(np.diff(thr) > 0) and np.all(np.diff(fpir) >= 0) and np.all(np.diff(fnir) <= 0)
    assert fnir[-1] == 0.5 and fpir[-1] == 1.0
    summary = s.summary(0.85)
    assert summary["fnir_at_fpir_1pct"] == s.fnir_at_fpir(0.01) == 0.75
    assert summary["fpir_at_threshold"] == 0.5 and summary["rank1"] == 0.5


def test_given_wrong_person_nearest_and_lookalike_stranger_then_fn_and_fp():
    e0 = basis(0)
    a = np.stack([e0, e0, e0])  # A: three identical photos
    b = unit(np.stack([0.99 * e0 + 0.14 * basis(1), 0.99 * e0 - 0.14 * basis(1)]))
    # B's photos look like A: whichever B enrolls, B's other photo is nearer A's template
    # (0.20) than B's own (0.28): a false negative at any threshold
    strangers = {
        "C": unit(0.99 * e0 + 0.14 * basis(2))[None],  # looks like A: a false positive
        "D": basis(5)[None],
    }
    data = {"A": a, "B": b, **strangers}
    for seed in range(4):
        s = open_set_protocol(data, n_enrolled=2, gallery_per_person=1, seed=seed)
        assert s.gallery_templates == 2 and s.mated == 3 and s.nonmated == 2
        assert set(s.enrolled) == {"A", "B"}
        assert s.fnir(0.01) == pytest.approx(1 / 3) and s.fnir(1.99) == pytest.approx(1 / 3)
        assert s.fpir(0.1) == 0.0 and s.fpir(0.5) == 0.5 and s.fpir(1.0) == 0.5
        assert s.fpir(1.5) == 1.0


# ------------------------------------------------------------------ the protocol's draws
def test_given_pool_when_swept_then_nested_galleries_same_strangers_and_exact_counts():
    data = clusters(n_pool=60, n_single=30)
    images = {k: len(v) for k, v in data.items()}
    results = sweep(data, sizes=(5, 20, 40), seeds=(0, 1, 2), gallery_per_person=(1, 3))
    assert sorted(results) == [5, 20, 40]
    for seed in range(3):
        draws = [results[n][seed] for n in (5, 20, 40)]
        # galleries nested, strangers the same for every N: the 40 - N pool identities in
        # between are enrolled at the larger sizes only and probe nobody at the smaller
        assert draws[0].enrolled == draws[1].enrolled[:5] == draws[2].enrolled[:5]
        assert draws[1].enrolled == draws[2].enrolled[:20]
        strangers = sum(1 for v in images.values() if v == 1) + sum(
            v for k, v in images.items() if v >= 2 and k not in draws[2].enrolled
        )
        assert {d.nonmated for d in draws} == {strangers}
        for d in draws:
            enrolled_images = sum(images[k] for k in d.enrolled)
            assert d.gallery_templates + d.mated == enrolled_images
            assert len(d.enrolled) <= d.gallery_templates <= 3 * len(d.enrolled)
            # well-separated identities: everyone named, no stranger accepted
            assert d.fnir(1.0) == 0.0 and d.fpir(1.0) == 0.0
    assert results[40][0].enrolled != results[40][1].enrolled  # seeds draw differently
    again = open_set_protocol(data, 20, (1, 3), seed=1, reserve_from=40)
    assert again.enrolled == results[20][1].enrolled
    assert np.array_equal(again.nonmated_distance, results[20][1].nonmated_distance)
    summary = summarize(results, threshold=1.0, candidate_thresholds=(0.9, 1.1))
    assert summary["sizes"]["40"]["fnir_at_threshold"] == {
        "mean": 0.0,
        "std": 0.0,
        "min": 0.0,
        "max": 0.0,
    }
    assert set(summary["sizes"]["5"]["at_thresholds"]) == {"0.900", "1.100"}
    table = format_open_set(summary)
    assert table.count("\n") == 4 and "| 40 |" in table
    with pytest.raises(ValueError, match="reserve_from"):
        open_set_protocol(data, 61, 1, seed=0)


def test_given_gallery_sizes_then_one_to_three_photos_never_all_of_them():
    data = clusters(n_pool=40, n_single=0, seed=3)
    s = open_set_protocol(data, 40, (1, 3), seed=0)
    per_person = [len(v) for v in data.values()]
    assert s.gallery_templates + s.mated == sum(per_person)
    assert s.mated >= len(per_person)  # at least one probe per person
    low = open_set_protocol(data, 40, 1, seed=0)
    assert low.gallery_templates == 40 and low.mated == sum(per_person) - 40


def test_given_accept_mask_then_rejected_probes_miss_and_never_pass():
    data = clusters(n_pool=10, n_single=0, seed=4)
    data["stranger"] = unit(data["id000"][0] + 0.01)[None]  # one photo, looks like id000
    base = open_set_protocol(data, 10, 1, seed=0)
    assert base.nonmated == 1 and "stranger" not in base.enrolled
    assert base.fpir(1.0) == 1.0 and base.fnir(1.0) == 0.0
    accept = {k: np.ones(len(v), bool) for k, v in data.items()}
    accept["stranger"][:] = False
    victim = base.enrolled[0]
    accept[victim][:] = False
    accept[victim][0] = True  # one enrollable photo; every other photo of them is refused
    gated = open_set_protocol(data, 10, 1, seed=0, accept=accept)
    assert gated.enrolled == base.enrolled and gated.nonmated == base.nonmated
    assert gated.fpir(1.99) == 0.0  # refused strangers are never accepted
    assert gated.fnir(1.99) == pytest.approx((len(data[victim]) - 1) / gated.mated)


# ------------------------------------------------------------------ per-camera thresholds
def test_given_camera_thresholds_when_configured_then_validated_and_resolved():
    cams = [
        {"camera_id": "door", "url": "0", "region": "r", "match_threshold": 0.6},
        {"camera_id": "lobby", "url": "1", "region": "r"},
    ]
    s = Settings(ingest={"cameras": cams})
    assert s.camera_thresholds() == {"door": 0.6}
    video = VideoSourceConfig(match_threshold=0.7).camera("gate", "gate.mp4")
    assert isinstance(video, CameraConfig) and video.match_threshold == 0.7
    assert s.camera_thresholds([video]) == {"door": 0.6, "gate": 0.7}
    with pytest.raises(ValidationError, match="match_threshold"):
        CameraConfig(camera_id="x", url="0", region="r", match_threshold=2.5)


def test_given_strict_camera_when_matching_then_unknown_where_other_camera_names():
    rng = np.random.default_rng(0)
    ada = unit(rng.standard_normal(512))
    # a probe at distance 0.8 from Ada's template: within 1.05, not within 0.6
    r = rng.standard_normal(512).astype(np.float32)
    other = unit(r - (r @ ada) * ada)
    probe = unit(np.cos(0.82) * ada + np.sin(0.82) * other)
    assert 0.75 < float(np.linalg.norm(probe - ada)) < 0.85
    m = Matcher("model-a", dim=512, threshold=1.05)
    m.apply(
        json.loads(
            index_message(
                "enroll", seq=1, person_id="ada", template_id="t1", vector=ada.tolist(),
                model_id="model-a",
            )
        )
    )
    s = Settings(
        ingest={
            "cameras": [
                {"camera_id": "door", "url": "0", "region": "r", "match_threshold": 0.6},
                {"camera_id": "lobby", "url": "1", "region": "r"},
            ]
        }
    )

    def seen_by(camera: str) -> FaceCandidate:
        return FaceCandidate(
            frame_id=f"{camera}-f1", camera_id=camera, region="r", capture_ts=1, face_index=0,
            box=(0.0, 0.0, 10.0, 10.0), score=0.99, embedding=probe, model_id="model-a",
            stages={},
        )

    door, lobby = to_events([seen_by("door"), seen_by("lobby")], m, s.camera_thresholds())
    assert lobby.identity == "ada" and lobby.threshold == 1.05
    assert door.identity == UNKNOWN and door.threshold == 0.6
    assert door.distance == lobby.distance
    # without overrides every camera uses match.threshold
    assert [e.identity for e in to_events([seen_by("door")], m)] == ["ada"]
    with pytest.raises(ValueError, match="thresholds for"):
        m.match(probe[None], [0.5, 0.6])


# ------------------------------------------------------------------ real faces
@pytest.fixture(scope="module")
def tiny_folder(celebrity5: Path, tmp_path_factory) -> Path:
    """identity/*.jpg: 3 photos of each of the 5 celebrities (symlinks, no copies): one
    FaceNet batch."""
    root = tmp_path_factory.mktemp("faces") / "celeb"
    for person in sorted((celebrity5 / "train").iterdir()):
        (root / person.name).mkdir(parents=True)
        for p in sorted(person.glob("*.jpg"))[:3]:
            (root / person.name / p.name).symlink_to(p)
    return root


@pytest.mark.data
def test_given_real_faces_when_protocol_run_then_cached_and_plausible(
    engine, tiny_folder, tmp_path
):
    from udfs.evaluation import OpenSetPlan, embed_images, evaluate_folder

    paths = sorted(tiny_folder.glob("*/*.jpg"))
    calls = []

    def counting(e, ps):
        calls.append(len(ps))
        return embed_images(e, ps)

    cache = tmp_path / "cache"
    vectors, meta = embed_cached(engine, tiny_folder, paths, cache, embed=counting)
    again, meta2 = embed_cached(engine, tiny_folder, paths[::-1], cache, embed=counting)
    assert calls == [len(paths)] and meta2["cached"] and not meta["cached"]
    assert np.array_equal(again, vectors[::-1])
    by_id, loaded = load_cached(Path(meta2["cache"]))
    assert loaded["paths"] == [str(p.relative_to(tiny_folder)) for p in paths]
    assert all(np.array_equal(by_id[k], v) for k, v in group_by_identity(paths, vectors).items())

    draws = [open_set_protocol(by_id, 3, (1, 3), seed=s) for s in range(3)]
    for d in draws:
        print(f"\nreal faces, 3 of 5 enrolled, seed {d.seed}: {d.summary(1.05)}")
        assert d.nonmated == 6 and d.mated + d.gallery_templates == 9
        assert np.mean(d.mated_correct) >= 0.6  # chance: 1/3
        # enrolled faces are nearer their own templates than strangers are to anyone
        assert np.median(d.mated_distance) < np.median(d.nonmated_distance)

    out = tmp_path / "eval"
    plan = OpenSetPlan(tiny_folder, sizes=(2, 3), seeds=(0, 1), threshold=1.05)
    report = evaluate_folder(engine, tiny_folder, out, open_set=plan, cache_dir=cache)
    assert calls == [len(paths)]  # the evaluation embedded nothing again
    written = json.loads((out / "eval.json").read_text())
    o = written["open_set"]
    assert set(o["sizes"]) == {"2", "3"} and o["embeddings_cache"] == meta2["cache"]
    assert len(o["sizes"]["3"]["draws"]) == 2 and o["pool_identities"] == 5
    assert (out / "open_set.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["open_set"]["threshold"] == 1.05


def test_given_bad_open_set_flags_when_eval_then_exit_2(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli.main import app

    runner = CliRunner()
    for flags, message in (
        (["--gallery", "3-1"], "LOW <= HIGH"),
        (["--sizes", "10,x"], "comma-separated integers"),
        (["--sizes", "0"], "positive integers"),
    ):
        result = runner.invoke(app, ["eval", str(tmp_path), *flags])
        assert result.exit_code == 2, result.output
        assert message in result.output
