"""The Grafana dashboard's panel queries as Prometheus can run them: Grafana's variables
replaced by what a stack on one machine has (every camera, the job's consumer group and
frames topic), the repeated per-stage panel expanded into one panel a stage."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "facerec.json"
)
STAGES = ("gate", "detect", "embed", "match")
"""The values of the dashboard's ``stage`` variable (its repeated panel)."""
COMPOSE_ONLY = {
    "kafka_consumergroup_lag": "kafka-exporter, which runs in docker-compose only",
}
"""Metrics that only the compose deployment exports, and why."""


def panel_queries(rate_interval: str = "2m") -> dict[str, list[str]]:
    """Panel title -> its PromQL queries, variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"$__rate_interval": rate_interval, "$camera": ".*",
              "$group": "facerec-recognition", "$frames_topic": "facerec.frames"}
    panels: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        for key, value in values.items():
            exprs = [e.replace(key, value) for e in exprs]
        if any("${stage}" in e for e in exprs):
            for stage in STAGES:
                title = panel["title"].replace("$stage", stage)
                panels[title] = [e.replace("${stage}", stage) for e in exprs]
        else:
            panels[panel["title"]] = exprs
    return panels


def compose_only(expr: str) -> bool:
    return any(metric in expr for metric in COMPOSE_ONLY)
