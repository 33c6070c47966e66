"""Processes named by PID and start time, read from /proc.

A PID alone does not name a process: once it exits, the kernel gives the number to the next
process that asks. The start time (clock ticks since boot, /proc/<pid>/stat field 22) does not
repeat for one PID, so a recorded pair still names the process it was taken from, and a
stop that checks it never signals a stranger that inherited the number.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path

Procs = dict[int, str]
"""PID -> start time: the processes something started."""


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and
    parentheses): state, ppid, ... ; None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_at(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the PID, it names one
    process, not whichever process the PID is given to later."""
    fields = _stat(pid)
    return fields[19] if fields else None


def alive(pid: int, since: str | None = None) -> bool:
    """Running (not a zombie) and, with ``since``, still the process started then."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return since is None or fields[19] == since


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def identify(pids: Iterable[int]) -> Procs:
    """PID -> start time of those of ``pids`` that run now."""
    return {p: t for p in pids if (t := started_at(p)) is not None}


def with_descendants(procs: Mapping[int, str]) -> Procs:
    """``procs`` that still run, and every process below them now."""
    out: Procs = {}
    for pid, since in procs.items():
        if alive(pid, since):
            out[pid] = since
            out.update(identify(descendants(pid)))
    return out


def end_processes(
    procs: Mapping[int, str], grace_s: float = 20.0, first_signal: int = signal.SIGTERM
) -> Procs:
    """Send ``first_signal`` to each process (PID -> start time, so a reused PID is left
    alone) that still runs, wait up to ``grace_s``, then SIGKILL what is left. Returns the
    processes that had to be killed."""
    live = {p: t for p, t in procs.items() if alive(p, t)}
    for pid in live:
        with suppress(ProcessLookupError):
            os.kill(pid, first_signal)
    deadline = time.monotonic() + grace_s
    while any(alive(p, t) for p, t in live.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = {p: t for p, t in live.items() if alive(p, t)}
    for pid in killed:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(p, t) for p, t in killed.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return killed


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on: its socket descriptors matched against the LISTEN
    rows of its network namespace's tables."""
    inodes = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
