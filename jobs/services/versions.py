"""The component versions of deploy/versions.env, the one place they are defined, and where
``make setup`` put the JVM components."""

from __future__ import annotations

from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = ROOT / "deploy" / "versions.env"
JVM_DIR = ROOT / ".jvm"
"""``make jvm`` (part of ``make setup``) fetches one folder of jars per set here."""


@cache
def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def jvm_set(name: str) -> Path:
    """The folder of one JVM set (``flink-kafka``, ``kafka``, ``cassandra``)."""
    return JVM_DIR / name
