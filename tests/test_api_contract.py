"""The API keeps its contract: schemathesis, every phase (examples, coverage, fuzzing,
stateful), against the live app (uvicorn on loopback, the real face engine, real stores),
with a fixed seed and bounded examples; any failure of any check fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_api import KEYS, make_settings

from api.app import create_app
from api.schemas import STORE_INT_MAX
from testkit.browser import AppServer

SEED = 1
MAX_EXAMPLES = 10
"""Cases per operation in the fuzzing phase (coverage makes as many as the schema needs)."""

# A schema cannot say that uploaded bytes are an image with an acceptable face, that a
# cursor is one the route handed out, or that end_ms is after start_ms: such requests are
# valid by the schema and refused with their documented reason (422 invalid_image /
# no_face, 400 invalid_cursor / invalid_query). Only these statuses, only on these routes,
# count as an accepted answer to schema-valid data; every other check applies as is.
CONFIG = """
[[operations]]
include-path = ["/people/{person_id}/faces", "/recognize", "/verify"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]

[[operations]]
include-path = ["/events", "/sightings", "/audit"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]
"""


@pytest.fixture(scope="module")
def live_api(tmp_path_factory, engine):
    unlimited = {"recognition": None, "enrollment": None, "search": None}
    settings = make_settings(
        tmp_path_factory.mktemp("contract"), api={"rate_limits": {"admin": unlimited}}
    )
    with AppServer(create_app(settings, engine=engine)) as server:
        yield server.url


def run_schemathesis(url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(config),
        "run", f"{url}/openapi.json",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--header", f"X-API-Key: {KEYS['admin']}",
        "--report", "junit", "--report-dir", str(workdir),
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=workdir, check=False
    )


def test_given_the_live_api_when_schemathesis_runs_every_phase_then_no_failure(live_api, tmp_path):
    doc = httpx.get(f"{live_api}/openapi.json").json()
    operations = sum(len(ops) for ops in doc["paths"].values())
    assert "HTTPValidationError" not in str(doc) and operations >= 25
    # every integer parameter is bounded within what the stores take: the coverage phase
    # then sends each bound (and one past it), where fuzzing alone may never reach
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                for schema in param["schema"].get("anyOf", [param["schema"]]):
                    if schema.get("type") == "integer":
                        where = f"{path} {param['name']}"
                        assert 0 <= schema.get("minimum", -1), where
                        assert schema.get("maximum", STORE_INT_MAX + 1) <= STORE_INT_MAX, where

    run = run_schemathesis(live_api, tmp_path)

    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-12_000:] + run.stderr[-2_000:]
    assert f"Tested: {operations}" in summary, summary
    for phase in ("Coverage", "Fuzzing", "Stateful"):  # Examples: the document has none
        assert f"✅ {phase}" in summary, summary
