"""The retention sweep: what is past its retention period is deleted, in one pass over
every store that keeps records about people.

=====================  ===========================  ====================================
what                   period                       how
=====================  ===========================  ====================================
per-frame events       ``events.ttl_days``          ``EventStore.purge_expired``
sightings              ``retention.sightings_days`` ``EventStore.purge_expired``
sighting evidence      ``evidence.retention_days``  ``EvidenceStore.purge_older_than``
audit records          ``retention.audit_days``     ``AuditLog.purge_before``
=====================  ===========================  ====================================

0 keeps a kind forever. Template crops and templates are not swept: they last as long as
the person is enrolled (erasure removes them). The API runs the sweep every
``retention.sweep_interval_s`` in a thread; `facerec retention sweep` runs it once. Every
period counts back from one ``now`` taken from the sweep's clock (tests set it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from facerec.config import Settings
from facerec.eventstore import EventStore
from facerec.eventstore.base import DAY_MS
from facerec.evidence import EvidenceStore
from facerec.records import now_ms
from index_builder.audit import AuditLog
from index_builder.periodic import PeriodicTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swept:
    """What one sweep deleted, counted."""

    now_ms: int
    events: int = 0
    sightings: int = 0
    evidence: int = 0
    audit_records: int = 0


class RetentionSweep:
    def __init__(
        self,
        settings: Settings,
        events: Callable[[], EventStore],
        evidence: EvidenceStore,
        audit: AuditLog,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``events``: the event store, opened when first needed. ``clock``: epoch ms the
        retention periods count back from."""
        self.settings, self.events, self.evidence, self.audit = settings, events, evidence, audit
        self.clock = clock
        self.last: Swept | None = None
        self._background = PeriodicTask("retention-sweep", self.run)

    def run(self) -> Swept:
        """One sweep over every store; what it deleted."""
        now = self.clock()
        removed = self.events().purge_expired(now)
        evidence = self.evidence.purge_older_than(
            self.settings.evidence.retention_days, now=datetime.fromtimestamp(now / 1000, UTC)
        )
        audit_days = self.settings.retention.audit_days
        audit = self.audit.purge_before(now - audit_days * DAY_MS) if audit_days else 0
        swept = Swept(now, removed.events, removed.sightings, evidence, audit)
        log.info(
            "retention sweep: %d events, %d sightings, %d evidence objects, %d audit records "
            "deleted",
            swept.events,
            swept.sightings,
            swept.evidence,
            swept.audit_records,
        )
        self.last = swept
        return swept

    def start(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` (the first one ``interval_s`` after the start) in a
        daemon thread until ``stop``; 0: never."""
        self._background.start(interval_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._background.stop(timeout_s)
