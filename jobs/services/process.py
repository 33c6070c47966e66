"""One server process of ours: configured in its own folder, started in its own session,
ready when a real client request succeeds, stopped by its PID.

A subclass writes its configuration (``configure``), starts the process (``launch``) and
answers whether a client request works (``probe``). ``start`` waits for that with a
deadline; a process that exits or stays unready raises ``ServiceError`` with the tail of its
log, so a failing start says why. Ports are picked free on loopback; if another process takes
one before the server binds it, the start is retried with new ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
JAVA17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")


class ServiceError(RuntimeError):
    """A component did not start or did not become ready; the message carries its log tail."""


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct ports free a moment ago (held together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


def java17() -> str:
    """The Java 17 runtime: Cassandra 5.0 refuses newer JDKs (a system-wide Policy object is
    no longer supported), and one JVM for every component keeps them comparable."""
    home = os.environ.get("JAVA_HOME")
    for candidate in ([Path(home) / "bin" / "java"] if home else []) + [JAVA17]:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ServiceError("no Java runtime found: install OpenJDK 17 or set JAVA_HOME")
    return found


def classpath(folder: Path) -> str:
    if not any(folder.glob("*.jar")):
        raise ServiceError(f"no jars in {folder}: run `make setup` (or `make jvm`) first")
    return str(folder / "*")


class ServiceProcess:
    """Subclasses set ``name`` and implement ``configure``, ``launch`` and ``probe``."""

    name = "service"
    startup_timeout_s = 60.0
    stop_timeout_s = 30.0
    bind_retries = 2

    def __init__(self, workdir: Path | None = None, startup_timeout_s: float | None = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"facerec-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if startup_timeout_s is not None:
            self.startup_timeout_s = startup_timeout_s
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------------ for subclasses
    def configure(self) -> None:
        """Pick ports and write the configuration into ``workdir`` (called on every try)."""

    def launch(self) -> None:
        raise NotImplementedError

    def probe(self) -> bool:
        """True once a real client request succeeds; exceptions count as not yet."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        started = time.monotonic()
        for attempt in range(self.bind_retries + 1):
            try:
                self.configure()
                self.launch()
                self._wait_ready(started + self.startup_timeout_s)
                break
            except BaseException as exc:
                clash = "Address already in use" in log_tail(self.log_path, 200)
                self.terminate()
                if not (isinstance(exc, ServiceError) and clash and attempt < self.bind_retries):
                    self.remove_workdir()
                    raise
        self.startup_seconds = time.monotonic() - started
        return self

    def restart(self) -> Self:
        """Stop (if still running) and start again on the same ports, configuration and
        data: what an operator's restart or a crashed node's recovery does."""
        started = time.monotonic()
        self.terminate()
        self.launch()
        self._wait_ready(started + self.startup_timeout_s)
        return self

    def popen(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _wait_ready(self, deadline: float) -> None:
        last: BaseException | None = None
        while True:
            if not self.alive():
                rc = self.proc.returncode if self.proc else "?"
                raise ServiceError(
                    f"{self.name} exited (rc={rc}) before it was ready; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            try:
                if self.probe():
                    return
            except Exception as exc:  # a starting server refuses requests: try again
                last = exc
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} not ready within {self.startup_timeout_s:.0f} s (last probe "
                    f"error: {last!r}); log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def terminate(self) -> None:
        """SIGTERM our own PID, wait, then SIGKILL; never signals anything else."""
        if self.pid is None:
            return
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end = time.monotonic() + self.stop_timeout_s
            while self.alive() and time.monotonic() < end:
                time.sleep(0.1)
            if self.alive():
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        self.pid = None

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (failure tests); the workdir stays."""
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait(timeout=10)
        self.proc = None
        self.pid = None

    def remove_workdir(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        self.terminate()
        self.remove_workdir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
