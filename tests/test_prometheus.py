"""A real Prometheus server scrapes a running API (uvicorn) with the scrape rules of
deploy/prometheus/prometheus.yml; its p95 latency comes back through Prometheus' HTTP API.
The job's side (a standalone cluster scraped with the same rules and relabelling, every
dashboard panel answering, the alert rules loaded) is tests/test_stack.py's."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from jobs.services.process import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
API_P95 = 'histogram_quantile(0.95, sum by (le) (rate(facerec_api_request_seconds_bucket[30s])))'


def _get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.load(r)


def _wait(check, what: str, timeout: float, log: Path | None = None):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except OSError as exc:
            last = exc
        time.sleep(1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not reached in {timeout:.0f} s (last: {last!r})\n{tail}")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """uvicorn serving api.app.create_app (model loaded lazily) on a free port."""
    work = tmp_path_factory.mktemp("api")
    (work / "facerec_api_app.py").write_text(
        "from api.app import create_app\n"
        "from facerec.config import Settings\n"
        f"app = create_app(Settings(data_dir={str(work / 'data')!r}), load_model=False)\n"
    )
    port = free_port()
    log = work / "uvicorn.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{work}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "facerec_api_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get_json(f"{url}/healthz"), "API /healthz", 120, log)
        yield {"url": url, "port": port}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, api_server):
    """deploy/prometheus/prometheus.yml and alerts.yml with the targets pointed at this
    machine (jobs/services/prometheus.py), scraping every second."""
    from jobs.services.process import ServiceError
    from jobs.services.prometheus import PrometheusServer, prometheus_binary, scrape_config

    try:
        prometheus_binary()
    except ServiceError as exc:
        pytest.skip(str(exc))
    config = scrape_config(
        flink=[],
        api=[f"127.0.0.1:{api_server['port']}"],
        scrape_interval="1s",
        evaluation_interval="5s",
    )
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), config=config).start()
    try:
        yield {"url": server.url, "log": server.log_path}
    finally:
        server.stop()


def query(prom: dict, expr: str) -> list[dict]:
    body = _get_json(f"{prom['url']}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def _finite_scalar(prom: dict, expr: str) -> float | None:
    result = query(prom, expr)
    if len(result) != 1:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def test_given_api_traffic_when_prometheus_scrapes_then_p95_request_latency_is_a_number(
    prometheus, api_server
):
    url = api_server["url"]
    deadline = time.monotonic() + 60
    value = None
    while value is None and time.monotonic() < deadline:
        for path in ("/healthz", "/readyz", "/healthz", "/events", "/people"):
            try:
                urllib.request.urlopen(url + path, timeout=5).close()  # noqa: S310
            except OSError:
                pass  # 401 without a key, 503 before the model loads: all are observed
        time.sleep(1)
        value = _finite_scalar(prometheus, API_P95)
    assert value is not None, f"no finite {API_P95}: {query(prometheus, API_P95)}"
    assert 0 < value < 30, value
    routes = {r["metric"]["route"] for r in query(prometheus, "facerec_api_requests_total")}
    assert {"/healthz", "/readyz"} <= routes
