"""Switching a SQLite database to WAL when several processes may open it at once."""

from __future__ import annotations

import sqlite3
import time


def use_wal(conn: sqlite3.Connection, timeout_s: float = 10.0) -> str:
    """Put ``conn``'s database in WAL mode; returns the journal mode in force (``memory``
    for an in-memory database).

    Processes opening a new database together race for this switch (the job's parallel
    event-store writers do), and SQLite answers "database is locked" at once instead of
    waiting out the busy timeout: 9 of 400 openers, four at a time, failed so here, and a
    writer failing so fails its Flink task. So the switch is retried until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
