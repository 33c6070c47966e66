"""Prometheus on one machine: Debian's ``prometheus`` binary (``make setup`` installs the
package as root) with the project's scrape rules and alert rules (deploy/prometheus), its
targets pointed at this machine, on a loopback port, its TSDB in its work folder.
``tests/test_prometheus.py`` and ``facerec stack`` run it.

    config = scrape_config(flink=["127.0.0.1:9249"], api=["127.0.0.1:8000"])
    with PrometheusServer(config=config) as prom:
        prom.query("up")

``scrape_config`` keeps what deploy/prometheus/prometheus.yml says about each job (the
relabelling of the Flink reporter's names above all) and swaps only its service discovery,
made for compose's DNS names, for loopback targets: a list, or a JSON file of targets
(``file_sd_configs``) that Prometheus re-reads when it changes, for targets whose ports are
known only once their processes run.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from jobs.services.process import LOOPBACK, ServiceError, ServiceProcess, free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise ServiceError(
            "prometheus not found on PATH: run `make setup` as root (installs the Debian "
            "package prometheus) or `apt-get install prometheus`"
        )
    return found


def _targets(targets: Sequence[str] | Path) -> dict[str, Any]:
    if isinstance(targets, Path):
        return {"file_sd_configs": [{"files": [str(targets)], "refresh_interval": "10s"}]}
    return {"static_configs": [{"targets": list(targets)}]}


def scrape_config(
    *,
    flink: Sequence[str] | Path = (),
    api: Sequence[str] | Path = (),
    ingest: Sequence[str] | Path = (),
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml for targets on this machine (``host:port`` lists or
    a targets file each): the same jobs, relabel rules and rule file. Jobs without targets
    are left out, as is the deployed ``kafka`` job (its kafka-exporter is compose's)."""
    deployed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in deployed["scrape_configs"]}
    discovery = ("dns_sd_configs", "static_configs", "file_sd_configs")
    scrape = []
    for name, targets in (("flink", flink), ("api", api), ("ingest", ingest)):
        if isinstance(targets, Path) or targets:
            kept = {k: v for k, v in jobs[name].items() if k not in discovery}
            scrape.append({**kept, **_targets(targets)})
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": deployed["rule_files"],
        "scrape_configs": scrape,
    }


def write_targets(path: Path, targets: Sequence[str]) -> None:
    """A ``file_sd_configs`` file, replaced at once (Prometheus never reads half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": list(targets)}]))
    tmp.replace(path)


class PrometheusServer(ServiceProcess):
    """One Prometheus with ``config`` (a ``scrape_config`` tree; its ``rule_files`` are
    copied from deploy/prometheus beside it). ``port`` defaults to a free loopback port;
    ``self_scrape`` adds Prometheus itself as a target."""

    name = "prometheus"
    startup_timeout_s = 60.0
    stop_timeout_s = 30.0

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        config: dict[str, Any] | None = None,
        port: int | None = None,
        self_scrape: bool = False,
        retention: str = "15d",
        startup_timeout_s: float | None = None,
    ) -> None:
        super().__init__(workdir, startup_timeout_s)
        self.config = config or scrape_config()
        self.port = port
        self._port_fixed = port is not None
        self.self_scrape = self_scrape
        self.retention = retention

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServiceError("Prometheus has no port yet: start() it first")
        return f"http://{LOOPBACK}:{self.port}"

    # ------------------------------------------------------------------ ServiceProcess
    def configure(self) -> None:
        prometheus_binary()
        if not self._port_fixed:
            self.port = free_port()
        config = dict(self.config)
        if self.self_scrape:
            own = {"job_name": "prometheus", **_targets([f"{LOOPBACK}:{self.port}"])}
            config["scrape_configs"] = [*config["scrape_configs"], own]
        for rules in config.get("rule_files", []):
            shutil.copy(DEPLOY / rules, self.workdir / rules)
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def launch(self) -> None:
        self.popen([
            prometheus_binary(),
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
        ])

    def probe(self) -> bool:
        if self.port is None or not port_open(LOOPBACK, self.port):
            return False
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=3) as r:  # noqa: S310
            return bool(r.status == 200)

    # ------------------------------------------------------------------ HTTP API
    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:  # noqa: S310
            body = json.load(r)
        if body.get("status") != "success":
            raise ServiceError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets: job (``labels.job``), ``scrapeUrl``, ``health`` (up/down)."""
        return list(self.api("targets", state="active")["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])
