"""``facerec keys create|list|revoke|hash``: the API's keys.

Stored keys live in the enrollment store's database, as their SHA-256 only
(``index_builder.keys``); a running API sees a new or revoked key at its next request."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from facerec.config import Settings, api_key_hash
from index_builder.keys import ROLES, KeyNotFound, KeyStore
from jobs.cli.common import ConfigOpt, fail, settings, tell_enrollment_store

app = typer.Typer(help="API keys: create (shown once, stored hashed), list, revoke.")


@contextmanager
def _key_store(s: Settings) -> Iterator[KeyStore]:
    from index_builder.store import EnrollmentStore

    tell_enrollment_store(s)
    store = EnrollmentStore.from_settings(s)
    try:
        yield KeyStore(store)
    finally:
        store.close()


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who will hold the key (a client, a person).")],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")],
    config: ConfigOpt = None,
) -> None:
    """Create a key and print it, once: only its hash is stored, it cannot be shown again."""
    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}", 2)
    with _key_store(settings(config)) as keys:
        try:
            stored, key = keys.create(name, role)
        except ValueError as exc:
            raise fail(str(exc), 2) from exc
    typer.secho(
        f"created key {stored.id} for {stored.name!r} (role {stored.role}); it is shown "
        "only now: hand it to its holder, the store keeps its hash",
        err=True,
    )
    typer.echo(key)


@app.command("list")
def list_keys(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Every key: stored ones (id, name, role, created, revoked) and configured ones."""
    s = settings(config)
    rows = [
        {"id": None, "name": k.name, "role": k.role, "source": "config",
         "form": "key" if k.key is not None else "key_hash", "created_at": None,
         "revoked_at": None}
        for k in s.api.keys
    ]  # fmt: skip
    with _key_store(s) as keys:
        for k in keys.list():
            rows.append(
                {"id": k.id, "name": k.name, "role": k.role, "source": "store", "form": "hash",
                 "created_at": k.created_at.isoformat(timespec="seconds"),
                 "revoked_at": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at
                 else None}
            )  # fmt: skip
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    typer.echo(f"{'ID':<9} {'NAME':<24} {'ROLE':<7} {'SOURCE':<7} {'CREATED':<26} STATE")
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        typer.echo(
            f"{row['id'] or '-':<9} {row['name']:<24} {row['role']:<7} {row['source']:<7} "
            f"{row['created_at'] or '-':<26} {state}"
        )


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `facerec keys list` shows.")],
    config: ConfigOpt = None,
) -> None:
    """Revoke a stored key: a running API refuses it from its next request on."""
    with _key_store(settings(config)) as keys:
        try:
            stored = keys.revoke(key_id)
        except KeyNotFound as exc:
            raise fail(exc.message, 1) from exc
    when = stored.revoked_at.isoformat(timespec="seconds") if stored.revoked_at else "?"
    typer.echo(f"key {stored.id} of {stored.name!r} (role {stored.role}) revoked at {when}")


@app.command("hash")
def hash_key() -> None:
    """Read a key on stdin, print ``sha256:<hex>`` for ``api.keys[].key_hash`` (a
    configuration then holds no key; production accepts configured keys only so)."""
    key = sys.stdin.readline().strip()
    if not key:
        raise fail('give the key on stdin, e.g. `printf %s "$KEY" | facerec keys hash`', 2)
    typer.echo(api_key_hash(key))
