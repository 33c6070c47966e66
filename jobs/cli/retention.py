"""``facerec retention sweep``: delete what is past its retention period, once (the API
does it every ``retention.sweep_interval_s``)."""

from __future__ import annotations

import typer

from jobs.cli.common import ConfigOpt, settings, tell_enrollment_store, tell_event_store

app = typer.Typer(
    help="Retention of events, sightings, evidence and audit records.", no_args_is_help=True
)


@app.command()
def sweep(config: ConfigOpt = None) -> None:
    """Delete the events, sightings, sighting evidence and audit records older than their
    retention periods (events.ttl_days, retention.sightings_days, evidence.retention_days,
    retention.audit_days; 0 keeps a kind forever)."""
    from facerec.eventstore import open_event_store
    from facerec.evidence import open_evidence_store
    from index_builder.audit import AuditLog
    from index_builder.retention import RetentionSweep
    from index_builder.store import EnrollmentStore

    s = settings(config)
    tell_enrollment_store(s)
    tell_event_store(s)
    store = EnrollmentStore.from_settings(s)
    events = open_event_store(s)
    evidence = open_evidence_store(s)
    try:
        swept = RetentionSweep(s, lambda: events, evidence, AuditLog(store)).run()
    finally:
        evidence.close()
        events.close()
        store.close()
    sightings_days = s.retention.sightings_days
    typer.echo(
        f"deleted {swept.events} event(s) (events.ttl_days {s.events.ttl_days}), "
        f"{swept.sightings} sighting(s) (retention.sightings_days "
        f"{s.events.ttl_days if sightings_days is None else sightings_days}), "
        f"{swept.evidence} evidence object(s) (evidence.retention_days "
        f"{s.evidence.retention_days}), {swept.audit_records} audit record(s) "
        f"(retention.audit_days {s.retention.audit_days})"
    )
