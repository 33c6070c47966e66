"""The retention sweep on real stores, under a clock the test sets: per-frame events,
sightings, sighting evidence and audit records each go after their own period; the API
runs it on a schedule and `facerec retention sweep` runs it once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from test_erasure import event, sighting
from typer.testing import CliRunner

from facerec.config import Settings
from facerec.eventstore import SightingQuery
from facerec.eventstore.base import DAY_MS
from facerec.eventstore.sqlite import SqliteEventStore
from facerec.evidence import open_evidence_store
from index_builder.audit import AuditLog, AuditQuery
from index_builder.retention import RetentionSweep
from index_builder.store import EnrollmentStore
from jobs.cli.main import app

DAY0 = 20_600 * DAY_MS
"""A fixed UTC midnight: every date in these tests counts from it."""


def record_recognition(audit: AuditLog, subjects: tuple[str, ...] = ("ada",)) -> None:
    """One audit record of ``ops`` recognising ``subjects`` (default: ada)."""
    audit.record(
        key_name="ops",
        role="query",
        action="recognize",
        method="POST",
        route="/recognize",
        status=200,
        outcome="ok",
        subjects=list(subjects),
    )


def stores(settings: Settings, clock):
    events = SqliteEventStore(
        settings.events_sqlite_path(),
        ttl_days=settings.events.ttl_days,
        sightings_ttl_days=settings.retention.sightings_days,
        clock=clock,
    )
    enrollment = EnrollmentStore.from_settings(settings)
    return events, open_evidence_store(settings), enrollment, AuditLog(enrollment, clock=clock)


def fill(events, evidence, audit, now: list[int]) -> None:
    """Day 0: events, sightings (with crops), audit records; day 8: the same again."""
    for day in (0, 8):
        now[0] = DAY0 + day * DAY_MS
        events.write([event("ada", day, now[0])])
        s = sighting("ada", day, now[0])
        events.write_sightings([s])
        evidence.put(str(s.evidence_key), b"crop")
        record_recognition(audit)


def test_given_a_set_clock_when_swept_then_each_kind_goes_after_its_own_period(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        events={"ttl_days": 5},
        evidence={"retention_days": 3},
        retention={"sightings_days": 10, "audit_days": 12},
    )
    now = [DAY0]
    events, evidence, enrollment, audit = stores(settings, lambda: now[0])
    fill(events, evidence, audit, now)
    sweep = RetentionSweep(settings, lambda: events, evidence, audit, clock=lambda: now[0])

    now[0] = DAY0 + 9 * DAY_MS  # day 9: past events (5) and evidence (3) of day 0 only
    swept = sweep.run()
    assert (swept.events, swept.sightings, swept.evidence, swept.audit_records) == (1, 0, 1, 0)
    assert [e.capture_ts for e in events.search()[0]] == [DAY0 + 8 * DAY_MS]
    day8 = datetime.fromtimestamp((DAY0 + 8 * DAY_MS) / 1000, UTC).date()
    assert evidence.sighting_days() == [day8]

    now[0] = DAY0 + 10 * DAY_MS + 1  # sightings (10) of day 0
    assert sweep.run().sightings == 1
    assert [s.first_seen_ms for s in events.search_sightings(SightingQuery())[0]] == [
        DAY0 + 8 * DAY_MS
    ]
    now[0] = DAY0 + 12 * DAY_MS + 1  # audit records (12) of day 0
    assert sweep.run().audit_records == 1
    assert [r.at_ms for r in audit.search(AuditQuery())[0]] == [DAY0 + 8 * DAY_MS]
    assert sweep.run() == type(swept)(now[0])  # nothing left past its period
    events.close()
    enrollment.close()


def test_given_zero_periods_when_swept_then_everything_is_kept(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        events={"ttl_days": 0},
        evidence={"retention_days": 0},
        retention={"sightings_days": 0, "audit_days": 0},
    )
    now = [DAY0]
    events, evidence, enrollment, audit = stores(settings, lambda: now[0])
    fill(events, evidence, audit, now)
    now[0] = DAY0 + 5000 * DAY_MS
    swept = RetentionSweep(settings, lambda: events, evidence, audit, lambda: now[0]).run()
    assert (swept.events, swept.sightings, swept.evidence, swept.audit_records) == (0, 0, 0, 0)
    assert len(audit.search(AuditQuery())[0]) == 2 and len(events.search()[0]) == 2
    events.close()
    enrollment.close()


def test_given_an_interval_when_started_then_the_sweep_runs_on_schedule(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention={"audit_days": 1})
    now = [DAY0]
    events, evidence, enrollment, audit = stores(settings, lambda: now[0])
    record_recognition(audit, subjects=())
    now[0] = DAY0 + 2 * DAY_MS
    sweep = RetentionSweep(settings, lambda: events, evidence, audit, clock=lambda: now[0])
    sweep.start(0.05)
    deadline = time.monotonic() + 10
    while sweep.last is None and time.monotonic() < deadline:
        time.sleep(0.02)
    sweep.stop()
    assert sweep.last is not None and sweep.last.audit_records == 1
    assert audit.search(AuditQuery()) == ([], None)
    events.close()
    enrollment.close()


def test_given_old_records_when_the_command_runs_then_it_deletes_and_says_so(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    enrollment = EnrollmentStore.from_settings(settings)
    old = AuditLog(enrollment, clock=lambda: 1_000)  # 1970: past any audit_days
    record_recognition(old)
    AuditLog(enrollment).record(
        key_name="ops",
        role="query",
        action="verify",
        method="POST",
        route="/verify",
        status=200,
        outcome="ok",
    )
    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": ""}
    r = CliRunner().invoke(app, ["retention", "sweep"], env=env)
    assert r.exit_code == 0, r.output
    assert "1 audit record(s) (retention.audit_days 365)" in r.output
    assert [x.action for x in AuditLog(enrollment).search(AuditQuery())[0]] == ["verify"]
    enrollment.close()
