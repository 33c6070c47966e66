"""The whole system on one machine, without containers (``facerec stack``): Kafka (KRaft),
PostgreSQL, Cassandra (optional), a standalone Flink cluster, Prometheus, the API, the ingest
agent and the recognition job, each started from what ``make setup`` installed
(jobs/services), each kept under one stack folder and stopped by its recorded PID.

    stack = Stack(Path("~/.local/share/facerec/stack"))
    stack.up(typer.echo, free_ports=False, cameras=Path("cameras.yaml"))
    components, job = stack.status()
    stack.down(typer.echo)
"""

from jobs.stack.components import NAMES
from jobs.stack.plan import StackError
from jobs.stack.stack import ComponentStatus, JobStatus, Stack, tail_lines

__all__ = ["NAMES", "ComponentStatus", "JobStatus", "Stack", "StackError", "tail_lines"]
