"""A bounded, ordered, crash-safe on-disk queue of frame records (one per camera).

Frames the broker could not take wait here and are re-sent oldest first when it returns.
SQLite in WAL mode gives ordering (``seq`` is an autoincrement key, never reused),
atomic appends and deletes, and survives a crash of the agent: an interrupted transaction
rolls back, a committed one is there at restart (``synchronous=NORMAL``: an operating
system crash may lose the last commits, never corrupt the file).

When appending would exceed ``max_bytes``, the OLDEST frames are deleted and counted
(``shed_total``) with an ERROR log line: a long outage keeps the most recent footage.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from facerec.sqlite_wal import use_wal

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    key   BLOB,
    value BLOB NOT NULL,
    size  INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class SpooledRecord:
    seq: int
    key: bytes | None
    value: bytes


class Spool:
    """Append at the tail, peek and acknowledge at the head. Thread-safe."""

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be > 0; got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        use_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool").fetchone()
        self._depth, self._bytes = int(n), int(size)
        self.shed_total = 0
        if n:
            log.warning("spool %s holds %d frames (%d bytes) from a previous run: they go first",
                        self.path, n, size)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._depth

    def append(self, records: Sequence[tuple[bytes | None, bytes]]) -> int:
        """Append ``(key, value)`` pairs in order; returns how many old frames were shed."""
        if not records:
            return 0
        incoming = sum(len(v) for _, v in records)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO spool (key, value, size) VALUES (?, ?, ?)",
                    [(k, v, len(v)) for k, v in records],
                )
                shed, shed_bytes = self._shed_locked(self._bytes + incoming - self.max_bytes)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._depth += len(records) - shed
            self._bytes += incoming - shed_bytes
            self.shed_total += shed
        if shed:
            log.error(
                "SPOOL FULL %s: shed the %d oldest frames (%d bytes) to stay under %d bytes; "
                "%d shed since start. The broker has been unreachable too long.",
                self.path, shed, shed_bytes, self.max_bytes, self.shed_total,
            )
        return shed

    def _shed_locked(self, excess: int) -> tuple[int, int]:
        if excess <= 0:
            return 0, 0
        shed = shed_bytes = 0
        rows = self._db.execute("SELECT seq, size FROM spool ORDER BY seq")
        last = None
        for seq, size in rows:
            if shed_bytes >= excess:
                break
            last, shed, shed_bytes = seq, shed + 1, shed_bytes + size
        rows.close()
        if last is not None:
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (last,))
        return shed, shed_bytes

    def peek(self, n: int) -> list[SpooledRecord]:
        """The ``n`` oldest records, oldest first (they stay until ``ack``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, key, value FROM spool ORDER BY seq LIMIT ?", (n,)
            ).fetchall()
        return [SpooledRecord(int(s), k, bytes(v)) for s, k, v in rows]

    def ack(self, up_to_seq: int) -> int:
        """Delete every record with ``seq <= up_to_seq`` (delivered); returns how many."""
        with self._lock:
            n, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool WHERE seq <= ?", (up_to_seq,)
            ).fetchone()
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (up_to_seq,))
            self._depth -= int(n)
            self._bytes -= int(size)
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
