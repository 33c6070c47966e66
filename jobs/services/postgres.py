"""A throwaway PostgreSQL cluster: ``initdb`` into the service's folder, ``pg_ctl`` on a free
loopback port, a database for facerec, ready when that database answers a query.

The server binaries are Debian's ``postgresql-<POSTGRES_MAJOR>`` (``make setup`` installs it
as root). PostgreSQL refuses to run as root, so as root every server command runs as the
``postgres`` user through ``runuser`` and the folder is handed to that user; otherwise the
commands run as the current user. The socket and the data stay inside the folder, and TCP
connections need the superuser password generated for this cluster: another local user can
reach neither.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from jobs.services.process import LOOPBACK, ServiceError, ServiceProcess, free_port, log_tail
from jobs.services.versions import versions

SUPERUSER = "postgres"
OS_USER = "postgres"
"""The account the server runs as when we are root (Debian's package creates it)."""
THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""Durability a throwaway cluster does not need: commits stop waiting for the disk."""


def pg_bindir(major: str | None = None) -> Path:
    """Where Debian puts the server binaries of ``major`` (default: POSTGRES_MAJOR)."""
    return Path("/usr/lib/postgresql") / (major or versions()["POSTGRES_MAJOR"]) / "bin"


def server_installed(bindir: Path | None = None) -> bool:
    found = bindir or pg_bindir()
    return (found / "initdb").is_file() and (found / "pg_ctl").is_file()


class PostgresCluster(ServiceProcess):
    """``with PostgresCluster() as pg: create_engine(pg.url)``."""

    name = "postgres"
    startup_timeout_s = 60.0
    stop_timeout_s = 30.0

    def __init__(
        self,
        workdir: Path | None = None,
        startup_timeout_s: float | None = None,
        *,
        database: str = "facerec",
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        port: int | None = None,
        password: str | None = None,
    ):
        """``port``: fixed (default: a free loopback port at each start). ``password``: the
        superuser password of a new cluster (default: generated); a cluster already in
        ``workdir`` keeps its own."""
        self.bindir = bindir or pg_bindir()
        if not server_installed(self.bindir):
            raise ServiceError(
                f"PostgreSQL server binaries not found in {self.bindir}: run `make setup` as "
                f"root (installs postgresql-{versions()['POSTGRES_MAJOR']})"
            )
        super().__init__(workdir, startup_timeout_s)
        self.database = database
        self.server_settings = {**({} if durable else THROWAWAY_SETTINGS), **(settings or {})}
        self.os_user = OS_USER if os.geteuid() == 0 else None
        self.datadir = self.workdir / "data"
        self.password_file = self.workdir / "superuser.password"
        self.port: int | None = port
        self._port_fixed = port is not None
        self.initial_password = password
        self.server_version: int | None = None

    # ------------------------------------------------------------------ for clients
    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def user(self) -> str:
        return SUPERUSER

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the facerec database (psycopg 3 driver)."""
        return (
            f"postgresql+psycopg://{SUPERUSER}:{quote(self.password, safe='')}"
            f"@{LOOPBACK}:{self._port()}/{quote(self.database, safe='')}"
        )

    def dsn(self, database: str | None = None) -> str:
        """libpq connection string for psycopg (default: the facerec database)."""
        return make_conninfo(
            host=LOOPBACK,
            port=self._port(),
            user=SUPERUSER,
            password=self.password,
            dbname=database or self.database,
        )

    def _port(self) -> int:
        if self.port is None:
            raise ServiceError("the PostgreSQL cluster has not been started")
        return self.port

    # ------------------------------------------------------------------ lifecycle
    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.os_user, "--", *argv] if self.os_user else argv

    def configure(self) -> None:
        if not self._port_fixed:
            self.port = free_port()
        if self.os_user:
            os.chown(self.workdir, *_ids(self.os_user))
        if (self.datadir / "PG_VERSION").is_file():
            return  # a restart: the cluster and its password are already there
        self.password_file.write_text((self.initial_password or secrets.token_urlsafe(24)) + "\n")
        self.password_file.chmod(0o600)
        if self.os_user:
            os.chown(self.password_file, *_ids(self.os_user))
        initdb = [
            str(self.bindir / "initdb"),
            "--pgdata", str(self.datadir),
            "--username", SUPERUSER,
            "--pwfile", str(self.password_file),
            # the socket lives in our 0700 folder; TCP needs the password
            "--auth-local", "trust",
            "--auth-host", "scram-sha-256",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(
            self._as_owner(initdb), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            who = f" (the {self.os_user} user must be able to reach it)" if self.os_user else ""
            raise ServiceError(
                f"initdb into {self.datadir} failed (rc={done.returncode}){who}:\n"
                f"{done.stdout}{done.stderr}"
            )

    def launch(self) -> None:
        options = [
            f"-p {self._port()}",
            f"-k {shlex.quote(str(self.workdir))}",
            f"-c listen_addresses={LOOPBACK}",
            *(f"-c {k}={shlex.quote(v)}" for k, v in self.server_settings.items()),
        ]
        pg_ctl = [
            str(self.bindir / "pg_ctl"), "start",
            "--pgdata", str(self.datadir),
            "--log", str(self.log_path),
            "--options", " ".join(options),
            "--wait", "--timeout", str(int(self.startup_timeout_s)),
        ]  # fmt: skip
        # its own session, like every service of ours: a Ctrl-C meant for the caller does not
        # reach the postmaster that pg_ctl leaves running
        done = subprocess.run(
            self._as_owner(pg_ctl),
            capture_output=True,
            text=True,
            timeout=self.startup_timeout_s + 10,
            start_new_session=True,
            check=False,
        )
        self.pid = self._postmaster_pid()
        if done.returncode != 0:
            raise ServiceError(
                f"pg_ctl start failed (rc={done.returncode}): {done.stdout}{done.stderr}"
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def probe(self) -> bool:
        with psycopg.connect(self.dsn("postgres"), connect_timeout=3, autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        with psycopg.connect(self.dsn(), connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT current_database(), current_setting('server_version_num')::int"
            ).fetchone()
        if row is None or row[0] != self.database:
            return False
        self.server_version = row[1]
        return True

    def alive(self) -> bool:
        # pg_ctl leaves the postmaster to whoever adopts orphans; one that does not reap
        # (make as PID 1 in a container) would keep a zombie that signal 0 still finds
        if not super().alive():
            return False
        stat = Path(f"/proc/{self.pid}/stat")
        with suppress(OSError, IndexError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return True

    def terminate(self) -> None:
        """Fast shutdown by PID: SIGINT rolls back open transactions and disconnects clients
        (SIGTERM, the base class's signal, would wait for every pooled connection to close);
        the base class's SIGTERM / SIGKILL follow only if the server is still there."""
        if self.pid is not None and self.alive():
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            end = time.monotonic() + self.stop_timeout_s
            while self.alive() and time.monotonic() < end:
                time.sleep(0.05)
        super().terminate()

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def _ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ServiceError(
            f"no {user!r} user to run PostgreSQL as (Debian's postgresql package creates it)"
        ) from None
    return entry.pw_uid, entry.pw_gid
