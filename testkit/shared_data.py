"""Where tests and benchmarks find real data: the configured faces_dir / videos_dir
(``FACEREC_FACES_DIR``, ``FACEREC_VIDEOS_DIR``), else the shared folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

from facerec.config import Settings

BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared"


def faces_dir() -> Path:
    return Settings().faces_dir or BESIDE_CHECKOUT / "faces"


def videos_dir() -> Path:
    return Settings().videos_dir or BESIDE_CHECKOUT / "videos"
