"""Where tests and benchmarks find real data: the configured faces_dir / videos_dir
(``FACEREC_FACES_DIR``, ``FACEREC_VIDEOS_DIR``), else ``../shared`` beside the checkout when it
holds the data, else the sample cache ``make setup`` fills (jobs/sample_data.py). LFW is only
ever in the first two."""

from __future__ import annotations

from pathlib import Path

from facerec.config import Settings
from jobs import sample_data


def faces_dir() -> Path:
    return sample_data.faces_dir(Settings().faces_dir)


def videos_dir() -> Path:
    return sample_data.videos_dir(Settings().videos_dir)
