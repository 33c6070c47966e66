"""The standalone Flink cluster of the tests: the product's (jobs/services/flink.py, what
``facerec stack`` runs) with what only tests do to it: crash a TaskManager, count the job's
failures and checkpoints.

    cluster = StandaloneCluster(tmp).start()
    job_id = cluster.submit(config_yaml)          # facerec job submit --source kafka
    cluster.kill_taskmanager(cluster.taskmanager_pids()[0])
    cluster.start_taskmanager()                   # taskmanager.sh start
    cluster.stop()
"""

from __future__ import annotations

import os
import signal

from jobs.services.flink import FlinkCluster
from jobs.services.pids import Procs, alive, descendants, end_processes, identify, started_at

__all__ = ["StandaloneCluster", "alive", "descendants", "end_processes", "identify",
           "started_at"]


class StandaloneCluster(FlinkCluster):
    """One JobManager and (at first) one TaskManager on free ports."""

    def kill_taskmanager(self, pid: int) -> Procs:
        """SIGKILL one TaskManager JVM, as a crash would. Returns its Python workers, PID ->
        start time (they lose their JVM; ``stop`` ends any that linger)."""
        if pid not in self.taskmanager_pids():
            raise ValueError(f"{pid} is not a live TaskManager of this cluster")
        workers = identify(descendants(pid))
        self._started.update(workers)
        os.kill(pid, signal.SIGKILL)
        self._wait(lambda: not alive(pid), 30, f"TaskManager {pid} to exit")
        return workers

    def failures(self, job_id: str) -> int:
        """How many times the job failed (and restarted) so far."""
        history = self.get(f"/jobs/{job_id}/exceptions")["exceptionHistory"]
        return len(history["entries"])

    def completed_checkpoints(self, job_id: str) -> int:
        return int(self.checkpoints(job_id)["counts"]["completed"])
