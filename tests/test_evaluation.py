"""`facerec eval`: metric functions on known inputs, and the command on real faces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from udfs import evaluation as ev


def test_kfold_accuracy_is_perfect_on_separable_distances():
    dist = np.array([0.2, 0.3, 0.4, 1.4, 1.5, 1.6] * 5)
    same = np.array([True, True, True, False, False, False] * 5)
    folds = np.arange(len(dist)) % 10
    acc, std, thr = ev.kfold_accuracy(dist, same, folds)
    assert acc == 1.0 and std == 0.0 and 0.4 <= thr < 1.4


def test_kfold_accuracy_counts_overlap_as_errors():
    dist = np.array([0.2, 1.5, 1.4, 0.3] * 10)
    same = np.array([True, True, False, False] * 10)
    acc, _, _ = ev.kfold_accuracy(dist, same, np.arange(40) % 10)
    assert acc == pytest.approx(
        0.75
    )  # best: accept only 0.2; 1.5 (genuine) and 0.3 (impostor) wrong


def test_tar_at_far_picks_the_last_threshold_within_the_far():
    dist = np.array([0.1, 0.2, 0.3, 0.9, 0.5, 1.0, 1.1, 1.2])
    same = np.array([True, True, True, True, False, False, False, False])
    tar, thr = ev.tar_at_far(dist, same, 0.0)
    assert tar == 0.75 and thr == 0.3  # 0.9 would admit the impostor at 0.5


def test_identification_rank1_and_open_set():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16))
    gallery = np.repeat(centres, 2, axis=0) + 0.01 * rng.standard_normal((8, 16))
    gallery_ids = np.repeat(np.array(list("abcd")), 2)
    probes = centres + 0.01 * rng.standard_normal((4, 16))
    out = ev.identification(gallery, gallery_ids, probes, np.array(list("abcd")))
    assert out["rank1"] == 1.0
    assert out["fnir_at_fpir_1pct"] == 0.0


def test_verification_pairs_are_balanced_and_seeded():
    labels = np.array(list("aaabbbccc"))
    a1, b1, s1 = ev.verification_pairs(labels, seed=3)
    a2, b2, s2 = ev.verification_pairs(labels, seed=3)
    assert s1.sum() == (~s1).sum() == 9
    assert (a1 == a2).all() and (b1 == b2).all()
    assert all((labels[a] == labels[b]) == s for a, b, s in zip(a1, b1, s1, strict=True))


@pytest.mark.data
def test_eval_command_on_real_faces_writes_report_and_roc(tmp_path, celebrity5):
    from jobs.cli.main import app

    # a small LFW-style folder: Name/Name_0001.jpg plus a 2-fold pairs.txt
    names = ["ben_afflek", "madonna", "elton_john"]
    root = tmp_path / "mini"
    for n in names:
        (root / n).mkdir(parents=True)
        for i, src in enumerate(sorted((celebrity5 / "train" / n).iterdir())[3:7], start=1):
            (root / n / f"{n}_{i:04d}.jpg").symlink_to(src)
    pairs = ["2\t2"]
    for fold in range(2):
        pairs += [f"{names[fold]}\t1\t2", f"{names[fold]}\t3\t4"]
        pairs += [f"{names[fold]}\t1\t{names[2]}\t1", f"{names[fold]}\t2\t{names[2]}\t2"]
    (root / "pairs.txt").write_text("\n".join(pairs) + "\n")

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", str(root), "--lfw", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())
    assert report["images"] == 12 and report["no_face"] == 0
    assert report["identification"]["rank1"] >= 0.8
    assert report["verification"]["accuracy_10fold"] >= 0.7
    assert report["lfw"]["pairs"] == 8
    assert (out / "roc.png").stat().st_size > 5000
    assert "identification rank-1" in result.output


def test_eval_command_refuses_a_missing_folder(tmp_path):
    from jobs.cli.main import app

    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "is not a directory" in result.output
