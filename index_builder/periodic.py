"""A task repeated in a daemon thread: the API process's background work (clustering the
unknown faces, the retention sweep)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    """Runs ``task`` every ``interval_s`` (the first run one interval after ``start``) until
    ``stop``. A failing run is logged and the next one tries again: the thread must outlive
    a store that is down for a while."""

    def __init__(self, name: str, task: Callable[[], object]) -> None:
        self.name, self.task = name, task
        self.stopping = threading.Event()
        """Set by ``stop``: a long run may check it to end early."""
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, interval_s: float) -> None:
        """Start the thread (0 or less: never; a second start: no-op)."""
        if interval_s <= 0 or self._thread is not None:
            return
        self.stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread, waiting up to ``timeout_s`` for a run under way."""
        self.stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _run(self, interval_s: float) -> None:
        while not self.stopping.wait(interval_s):
            try:
                self.task()
            except Exception:
                log.exception("%s failed; next try in %g s", self.name, interval_s)
