"""Static checks of the deployment and monitoring files (no Docker engine needed):
docker-compose.yml wiring, Prometheus config and alert rules (promtool check + rule unit
tests), the Grafana dashboard's queries, and the metric names they use against docs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
REQUIRED_VARS = {
    "POSTGRES_PASSWORD", "FACEREC_ADMIN_API_KEY_HASH", "FACEREC_ENROLL_API_KEY_HASH",
    "FACEREC_QUERY_API_KEY_HASH", "GRAFANA_ADMIN_PASSWORD", "CAMERA_URL",
}
ONE_SHOT = {"kafka-init", "job-submitter"}
VAR = re.compile(r"\$\{([A-Z0-9_]+)(:?[?\-][^}]*)?\}")


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian package `prometheus`; `make setup` "
                    "installs it as root)")
    return found


def _resolve(value: str) -> str:
    """``${VAR:-default}`` -> default, ``${VAR:?msg}`` -> <VAR> (what compose would use)."""
    return VAR.sub(lambda m: (m.group(2) or "")[2:] if (m.group(2) or "").startswith(":-")
                   else f"<{m.group(1)}>", value)


def _volumes(service: dict) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = _resolve(v).split(":")[:2]
        else:
            source, target = _resolve(v["source"]), v["target"]
        out.append((source, target))
    return out


# ------------------------------------------------------------------ compose
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_given_compose_service_then_it_has_an_image_or_a_buildable_dockerfile(name):
    service = SERVICES[name]
    assert "image" in service or "build" in service, name
    build = service.get("build")
    if build:
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict)
                                else "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_given_depends_on_then_targets_exist_and_conditions_are_backed():
    for name, service in SERVICES.items():
        deps = service.get("depends_on", {})
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], (
                    f"{name} waits for {target} to be healthy but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"


def test_given_long_running_services_then_each_has_a_healthcheck():
    missing = [n for n, s in SERVICES.items() if n not in ONE_SHOT and "healthcheck" not in s]
    assert not missing, f"no healthcheck: {missing}"
    for name in ONE_SHOT:
        assert SERVICES[name].get("restart") == "no", name


def test_given_named_volumes_then_every_one_used_is_declared_and_every_declared_is_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = {src for s in SERVICES.values() for src, _ in _volumes(s)
            if not src.startswith((".", "/", "<", "~"))}
    assert used <= declared, f"undeclared named volumes: {used - declared}"
    assert declared <= used, f"declared but unused: {declared - used}"
    for name in ("snapshots", "postgres-data", "cassandra-data", "kafka-data"):
        assert name in used


def test_given_bind_mounts_then_the_files_exist():
    for name, service in SERVICES.items():
        for source, _ in _volumes(service):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_given_required_variables_then_every_reference_fails_loudly_and_env_example_lists_them():
    from jobs.services.versions import versions

    refs = VAR.findall(COMPOSE_TEXT)
    names = {n for n, _ in refs}
    pinned = set(versions())  # from deploy/versions.env, the compose file's second env file
    assert names >= REQUIRED_VARS, REQUIRED_VARS - names
    for name, modifier in refs:
        if name in REQUIRED_VARS | pinned:
            assert modifier.startswith(":?"), f"${{{name}}} used without :? ({modifier!r})"
        else:
            assert modifier.startswith(":-"), f"${{{name}}} has no default and is not required"
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.M))
    assert names - pinned <= listed, f"missing from .env.example: {names - pinned - listed}"


def test_given_published_ports_then_no_two_services_collide():
    seen: dict[str, str] = {}
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            host = ":".join(parts[:-1]) if len(parts) > 1 else parts[0]
            host_port = host.split(":")[-1]
            other = seen.get(host_port)
            assert other is None, f"{name} and {other} both publish {host_port}"
            seen[host_port] = name
    assert {"8081", "8000", "9090", "3000"} <= set(seen)


def test_given_flink_services_then_flink_conf_is_mounted_as_flink_conf_dir():
    for name in ("jobmanager", "taskmanager", "job-submitter"):
        service = SERVICES[name]
        conf_dir = service["environment"]["FLINK_CONF_DIR"]
        assert ("./flink-conf", conf_dir) in _volumes(service), name
    for name in ("jobmanager", "taskmanager"):
        props = SERVICES[name]["environment"]["FLINK_PROPERTIES"]
        assert "jobmanager.rpc.address: jobmanager" in props
    assert (ROOT / "flink-conf" / "config.yaml").is_file()


def test_given_flink_dockerfile_then_it_builds_on_flink_2_with_python_311_and_the_kafka_jar():
    text = (DEPLOY / "flink" / "Dockerfile").read_text()
    assert re.search(r"^FROM flink:\$\{FLINK_VERSION\}", text, flags=re.M)
    assert re.search(r"^ARG FLINK_VERSION$", text, flags=re.M)  # from deploy/versions.env
    assert "python install 3.11" in text
    assert re.search(r"flink-sql-connector-kafka/\$\{FLINK_KAFKA_CONNECTOR_VERSION\}", text)
    assert re.search(r"^ARG FLINK_KAFKA_CONNECTOR_VERSION$", text, flags=re.M)
    assert "FACEREC_JOB__KAFKA_CONNECTOR_JAR" in text
    entry = DEPLOY / "flink" / "entrypoint.sh"
    assert entry.is_file() and entry.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(entry)], check=True)


def test_given_prometheus_config_then_targets_are_compose_services():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    hosts = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            hosts |= set(sd["names"])
        for sc in job.get("static_configs", []):
            hosts |= {t.split(":")[0] for t in sc["targets"]}
    assert hosts - {"localhost"} <= set(SERVICES), hosts - set(SERVICES)
    mounts = dict((t, s) for s, t in _volumes(SERVICES["prometheus"]))
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"


# ------------------------------------------------------------------ promtool
def test_given_prometheus_config_when_promtool_checks_then_valid():
    result = subprocess.run([_promtool(), "check", "config", "prometheus.yml"],
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_alert_rules_when_promtool_checks_then_valid():
    result = subprocess.run([_promtool(), "check", "rules", "alerts.yml"],
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_alert_unit_tests_when_promtool_runs_them_then_all_pass():
    result = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"],
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_alert_unit_tests_then_every_alert_is_tested_firing_and_silent():
    alerts = {r["alert"] for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml")
                                                  .read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    fired, silent = set(), set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts == fired, f"never seen firing: {alerts - fired}"
    assert alerts == silent, f"never seen silent: {alerts - silent}"


# ------------------------------------------------------------------ Grafana
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "facerec.json").read_text())


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def test_given_dashboard_then_panels_cover_the_operations_views():
    titles = " | ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for words in ("ingest rate", "kafka lag", "end-to-end latency", "stage", "utilisation",
                  "backpressure", "matches and unknowns", "snapshot age", "api latency",
                  "api errors"):
        assert words in titles, words
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(_dashboard_exprs())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(facerec_job_latency_ms_bucket" in exprs
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    variable = next(v for v in DASHBOARD["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] in uids
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "facerec.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert ("./deploy/grafana/dashboards", path) in _volumes(SERVICES["grafana"])


def test_given_dashboard_queries_when_promtool_parses_them_then_all_are_valid_promql(tmp_path):
    from testkit.dashboard import panel_queries

    exprs = [e for queries in panel_queries().values() for e in queries]
    assert len(exprs) >= len(_dashboard_exprs())
    rules = []
    for i, expr in enumerate(exprs):
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:panel_query:{i}", "expr": expr})
    (tmp_path / "dashboard_rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(tmp_path / "dashboard_rules.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_dashboard_and_alerts_then_every_metric_they_read_is_documented():
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\b((?:facerec|flink|kafka)_[a-zA-Z0-9_]+)", " ".join(_dashboard_exprs())
                                                                    + alerts))
    used = {m for m in used if not m.endswith("_") and m not in {"facerec_recognition"}}
    docs = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"\b((?:facerec|flink|kafka)_[a-zA-Z0-9_]+)", docs))
    # bucket families are documented by their base; facerec_job_${stage}_ms_bucket by its stages
    missing = {m for m in used if m not in documented and not m.startswith("facerec_job_index_")}
    assert not missing, f"undocumented metrics: {sorted(missing)}"


def test_given_versions_env_then_compose_dockerfile_setup_and_python_pins_use_it():
    """deploy/versions.env is the one definition: compose takes its images and build args
    from it, the pom from the Makefile, the services from jobs/services/versions.py, and
    PyFlink's pin must be the same Flink."""
    from jobs.services.versions import versions

    pinned = versions()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    images = {name: s.get("image", "") for name, s in SERVICES.items()}
    assert images["kafka"].startswith("apache/kafka:${KAFKA_VERSION:?")
    assert images["cassandra"].startswith("cassandra:${CASSANDRA_VERSION:?")
    assert images["postgres"].startswith("postgres:${POSTGRES_MAJOR:?")
    for key in ("FLINK_VERSION", "FLINK_KAFKA_CONNECTOR_VERSION"):
        assert f"{key}: ${{{key}:?" in compose_text, key
    used = set(re.findall(r"\$\{([A-Z0-9_]+):\?run docker compose with --env-file", compose_text))
    assert used <= set(pinned), used - set(pinned)
    assert not re.search(r"image: (apache/kafka|cassandra|postgres|flink):\d", compose_text)
    makefile = (ROOT / "Makefile").read_text()
    assert "include deploy/versions.env" in makefile
    for key in (
        "FLINK_KAFKA_CONNECTOR_VERSION", "KAFKA_VERSION", "CASSANDRA_VERSION", "S3PROXY_VERSION"
    ):
        assert f"$({key})" in makefile, key
    pyproject = (ROOT / "pyproject.toml").read_text()
    major_minor = ".".join(pinned["FLINK_VERSION"].split(".")[:2])
    assert f'"apache-flink=={major_minor}.*"' in pyproject
    import pyflink.version

    assert pyflink.version.__version__ == pinned["FLINK_VERSION"]
