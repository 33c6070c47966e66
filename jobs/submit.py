"""Submitting the recognition job to a standalone Flink cluster: the ``flink run -py``
command line, shipping the project's packages to the TaskManagers."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PACKAGES = ("facerec", "udfs", "jobs", "index_builder")
"""What the job's Python functions import on the TaskManagers (not api/, not testkit/)."""


def flink_bin() -> Path:
    """The ``flink`` launcher of the distribution inside the apache-flink wheel."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent / "bin" / "flink"


def submit_command(
    source: str,
    jobmanager: str,
    config: Path | None,
    python: str | None,
    detached: bool,
    from_savepoint: str | None = None,
    delivery: str | None = None,
) -> list[str]:
    pyfs = ",".join(str(ROOT / p) for p in SHIPPED_PACKAGES)
    cmd = [str(flink_bin()), "run", "-m", jobmanager]
    if detached:
        cmd.append("--detached")
    if from_savepoint:
        cmd += ["--fromSavepoint", from_savepoint]
    cmd += [
        "-py",
        str(ROOT / "jobs" / "recognition.py"),
        "-pyfs",
        pyfs,
        "-pyexec",
        python or sys.executable,
        "-pyclientexec",
        sys.executable,
        "--source",
        source,
    ]
    if config:
        cmd += ["--config", str(Path(config).resolve())]
    if delivery:
        cmd += ["--delivery", delivery]
    return cmd
