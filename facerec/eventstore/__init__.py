"""Recognition event storage: SQLite (default, one node) or Apache Cassandra (production).

``open_event_store(settings)`` picks the backend from ``settings.events.backend``; every
backend passes the same contract tests (tests/test_eventstore_contract.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facerec.eventstore.base import (
    DeletedRecords,
    EventStore,
    InvalidCursor,
    InvalidQuery,
    SightingQuery,
)

if TYPE_CHECKING:
    from facerec.config import Settings

__all__ = [
    "DeletedRecords", "EventStore", "InvalidCursor", "InvalidQuery", "SightingQuery",
    "open_event_store",
]


def open_event_store(settings: Settings) -> EventStore:
    cfg = settings.events
    if cfg.backend == "sqlite":
        from facerec.eventstore.sqlite import SqliteEventStore

        path = settings.events_sqlite_path()
        return SqliteEventStore(
            path, ttl_days=cfg.ttl_days, sightings_ttl_days=settings.retention.sightings_days
        )
    if cfg.backend == "cassandra":
        from facerec.eventstore.cassandra import CassandraEventStore

        return CassandraEventStore(
            cfg.cassandra_hosts,
            port=cfg.cassandra_port,
            keyspace=cfg.cassandra_keyspace,
            replication_factor=cfg.cassandra_replication_factor,
            consistency=cfg.cassandra_consistency,
            ttl_days=cfg.ttl_days,
            sightings_ttl_days=settings.retention.sightings_days,
        )
    raise ValueError(f"events.backend {cfg.backend!r}: expected 'sqlite' or 'cassandra'")
