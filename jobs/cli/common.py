"""What every command shares: the ``--config`` option, loading the settings with the
command's flags on top, and telling the user which stores a command reads."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from facerec.config import Settings, load_settings
from facerec.errors import FaceRecError
from facerec.records import UNKNOWN

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (else $FACEREC_CONFIG)."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def flags(**dotted: Any) -> dict[str, Any]:
    """Command-line flags as nested overrides: ``flags(**{"job.parallelism": 2})`` ->
    ``{"job": {"parallelism": 2}}``. Flags left unset (None) override nothing."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def settings(config: Path | None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """The one way a command gets its settings: defaults < file < environment < flags. A
    bad configuration is the user's to fix: say what is wrong, not a traceback (exit 2)."""
    try:
        return load_settings(config, overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"configuration error: {problems}", 2) from exc
    except (OSError, ValueError) as exc:
        raise fail(f"configuration error: {exc}", 2) from exc


def tell_enrollment_store(settings: Settings) -> None:
    """Commands that read the enrollment store say which one: an unexpected empty list is
    then visibly the wrong store, not a silent surprise."""
    typer.secho(f"enrollment store: {_hide_password(settings.enrollment_url())}", err=True)


def tell_event_store(settings: Settings) -> None:
    cfg = settings.events
    where = (
        str(settings.events_sqlite_path())
        if cfg.backend == "sqlite"
        else f"cassandra {','.join(cfg.cassandra_hosts)}:{cfg.cassandra_port}/"
        f"{cfg.cassandra_keyspace}"
    )
    typer.secho(f"event store: {where}", err=True)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


CLI_ROLE = "cli"
"""The role audit records of commands carry (the API's records carry the key's role)."""


def cli_caller() -> str:
    """Who runs a command, as the audit log names them: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container's uid)
        return f"cli:uid-{os.getuid()}"


@contextmanager
def audited(
    s: Settings, action: str, command: str, people: Iterable[str] = ()
) -> Iterator[set[str]]:
    """Records a command on biometric data or results in the audit log, as the API records
    its calls (api/audit.py), under the same action names: who (``cli_caller``, role
    ``cli``), the action, ``facerec <command>``, the exit status and outcome (``ok``, else
    the error's reason code) and the people involved: ``people`` and those the command
    adds to the set it is given. Recorded when the command ends, however it ends. A command
    has the stores' credentials, so the record is accountability, not a gate: when it
    cannot be written the command says so and exits 1 (a command that failed already
    keeps its own error)."""
    subjects = set(people)

    def record(status: int, outcome: str) -> str | None:
        from index_builder.audit import AuditLog
        from index_builder.store import EnrollmentStore

        try:
            store = EnrollmentStore.from_settings(s)
            try:
                AuditLog(store).record(
                    key_name=cli_caller(),
                    role=CLI_ROLE,
                    action=action,
                    method="CLI",
                    route=f"facerec {command}",
                    status=status,
                    outcome=outcome,
                    subjects=subjects - {UNKNOWN},
                )
            finally:
                store.close()
        except Exception as exc:
            message = f"the audit record of this command could not be written: {exc}"
            typer.secho(message, fg=typer.colors.RED, err=True)
            return message
        return None

    try:
        yield subjects
    except typer.Exit as exc:
        cause = exc.__cause__
        reason = cause.reason if isinstance(cause, FaceRecError) else "failed"
        record(exc.exit_code, reason if exc.exit_code else "ok")
        raise
    except FaceRecError as exc:
        record(1, exc.reason)
        raise
    except KeyboardInterrupt:
        record(130, "interrupted")
        raise
    except BaseException:
        record(1, "internal_error")
        raise
    if record(0, "ok") is not None:
        raise typer.Exit(1)
