"""A real Prometheus server scrapes a running API (uvicorn) and a running recognition job on a
standalone Flink cluster, with the scrape and relabel rules of deploy/prometheus/prometheus.yml
and the rules of alerts.yml; p95 latencies come back through Prometheus' HTTP API."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from jobs.services.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.data]
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"
API_P95 = 'histogram_quantile(0.95, sum by (le) (rate(facerec_api_request_seconds_bucket[30s])))'
JOB_P95 = 'histogram_quantile(0.95, sum by (le) (rate(facerec_job_latency_ms_bucket[30s])))'


def _prometheus_binary() -> str:
    """The prometheus binary; installed with apt-get (Debian package) when missing and root."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "prometheus"], env=env,
                       capture_output=True, timeout=600)
        found = shutil.which("prometheus")
        if found:
            return found
    pytest.skip("prometheus is not installed and cannot be installed here "
                "(needs root and apt-get: `apt-get install -y prometheus`, or `make setup`)")


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
def flink_job(tmp_path_factory, celebrity5):
    """A standalone cluster (flink-conf/ on free ports, as tests/test_job_cluster.py) running
    the recognition job on a looping, real-time synthetic face video (no snapshot: every face
    is an 'unknown', which still goes through every stage and the latency histogram)."""
    import pyflink

    from jobs.submit import submit_command
    from jobs.walkthrough import Segment, write_face_video
    from udfs.evaluation import list_identities

    work = tmp_path_factory.mktemp("flink")
    conf_dir = work / "conf"
    conf_dir.mkdir()
    for f in (ROOT / "flink-conf").iterdir():
        shutil.copy(f, conf_dir / f.name)
    config = yaml.safe_load((conf_dir / "config.yaml").read_text())
    rest_port, rpc_port, prom = free_port(), free_port(), free_port()
    config["rest"]["port"] = rest_port
    config["jobmanager"]["rpc"]["port"] = rpc_port
    config["execution"]["checkpointing"]["dir"] = (work / "checkpoints").as_uri()
    config["execution"]["checkpointing"]["savepoint-dir"] = (work / "savepoints").as_uri()
    config["metrics"]["reporter"]["prom"]["port"] = f"{prom}-{prom + 5}"
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (conf_dir / "masters").write_text(f"localhost:{rest_port}\n")
    (work / "log").mkdir()
    env = {**os.environ, "FLINK_CONF_DIR": str(conf_dir), "FLINK_LOG_DIR": str(work / "log")}
    bin_dir = Path(pyflink.__file__).resolve().parent / "bin"
    url = f"http://localhost:{rest_port}"
    subprocess.run([str(bin_dir / "start-cluster.sh")], env=env, check=True, timeout=120,
                   capture_output=True)
    try:
        _wait(lambda: _get_json(f"{url}/overview").get("taskmanagers", 0) >= 1,
              "a registered TaskManager", 90)
        val = list_identities(celebrity5 / "val")
        video = work / "faces.avi"
        write_face_video(video, [Segment(n, val[n][0], 6, 4) for n in ("ben_afflek", "madonna")],
                         fps=10)
        job_config = work / "facerec.yaml"
        job_config.write_text(yaml.safe_dump({
            "data_dir": str(work / "data"),
            "job": {"parallelism": 1, "video": {"realtime": True, "loop": 200, "region": "gate-1"}},
        }))
        cmd = submit_command(f"video:{video}", f"localhost:{rest_port}", job_config, None,
                             detached=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                                cwd=ROOT)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield {"url": url, "prom_ports": list(range(prom, prom + 6))}
    finally:
        try:
            for job in _get_json(f"{url}/jobs/overview")["jobs"]:
                if job["state"] == "RUNNING":
                    req = urllib.request.Request(f"{url}/jobs/{job['jid']}?mode=cancel",
                                                 method="PATCH")
                    urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
        except OSError:
            pass
        subprocess.run([str(bin_dir / "stop-cluster.sh")], env=env, timeout=120, check=False,
                       capture_output=True)


def scrape_config(api_port: int, flink_ports: list[int]) -> dict:
    """deploy/prometheus/prometheus.yml with its targets pointed at this machine: the same
    relabelling of the Flink reporter's names, the same rule file."""
    deployed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in deployed["scrape_configs"]}
    flink = {k: v for k, v in jobs["flink"].items() if k != "dns_sd_configs"}
    flink["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in flink_ports]}]
    api = {**jobs["api"], "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]}
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "5s"},
        "rule_files": deployed["rule_files"],
        "scrape_configs": [flink, api],
    }


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, api_server, flink_job):
    binary = _prometheus_binary()
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(scrape_config(api_server["port"], flink_job["prom_ports"]))
    )
    shutil.copy(DEPLOY / "alerts.yml", work / "alerts.yml")
    port = free_port()
    log = work / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200,  # noqa: S310
              "Prometheus ready", 60, log)
        yield {"url": url, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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


def test_given_running_job_when_prometheus_scrapes_then_p95_end_to_end_latency_is_a_number(
    prometheus,
):
    # the job needs its Python workers and TensorFlow up before the first face reaches match
    value = _wait(lambda: _finite_scalar(prometheus, JOB_P95), f"a finite {JOB_P95}", 420,
                  prometheus["log"])
    assert 0 < value <= 10_000, value  # 10 s = the highest finite bucket
    buckets = {r["metric"]["le"] for r in query(prometheus, "facerec_job_latency_ms_bucket")}
    assert "+Inf" in buckets and "_Inf" not in buckets, buckets
    cameras = {r["metric"]["camera"] for r in query(prometheus, "facerec_job_latency_ms_bucket")}
    assert cameras == {"faces"}
    for stage in ("gate", "detect", "embed", "match"):
        expr = (f"histogram_quantile(0.95, sum by (le) "
                f"(rate(facerec_job_{stage}_ms_bucket[1m])))")
        assert _finite_scalar(prometheus, expr) is not None, expr
    # what the dashboard and alerts read besides the histograms
    for name in ("facerec_job_frames_in", "facerec_job_frames_passed",
                 "facerec_job_unknowns", "facerec_job_snapshot_age_seconds",
                 "flink_taskmanager_job_task_busyTimeMsPerSecond",
                 "flink_taskmanager_job_task_backPressuredTimeMsPerSecond",
                 "flink_jobmanager_numRunningJobs"):
        assert query(prometheus, name), f"{name} not scraped"
    assert not query(prometheus, '{__name__=~"flink_taskmanager_job_task_operator_facerec_.*"}'), (
        "the relabel rule of deploy/prometheus/prometheus.yml missed a user metric"
    )
    rules = _get_json(f"{prometheus['url']}/api/v1/rules")["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) >= 9
