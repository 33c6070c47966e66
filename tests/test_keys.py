"""API keys: ``facerec keys create|list|revoke|hash`` through the real command line, what the
store keeps (the key's hash, never the key), a running app refusing a revoked key at once,
and production refusing keys given in plain text."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from typer.testing import CliRunner

from api.app import create_app
from facerec.config import Settings, api_key_hash, load_settings
from index_builder.keys import KeyStore
from index_builder.schema import api_keys
from index_builder.store import EnrollmentStore
from jobs.cli.main import app

KEY_RE = re.compile(r"^frk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")
PLAIN = "plain-key-" + "p" * 30


@pytest.fixture
def cli(tmp_path):
    """``facerec ...`` in-process, on a data dir of the test's own, no configuration file."""
    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": "", "FACEREC_API__KEYS": None}

    def run(*args: str, stdin: str | None = None):
        return CliRunner().invoke(app, list(args), env=env, input=stdin)

    run.settings = Settings(data_dir=tmp_path)  # type: ignore[attr-defined]
    return run


def create_key(cli, name: str, role: str) -> str:
    r = cli("keys", "create", name, "--role", role)
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert KEY_RE.match(key), r.stdout  # the key alone on stdout, for $(...)
    return key


def listed(cli) -> list[dict]:
    r = cli("keys", "list", "--json")
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_given_a_created_key_when_reading_the_store_then_only_its_hash_is_there(cli, tmp_path):
    key = create_key(cli, "ci bot", "query")
    key_id = key[4:12]
    db = tmp_path / "enrollment.sqlite"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 1
    assert not any(key in str(v) or key[13:] in str(v) for v in rows[0])
    assert api_key_hash(key) in rows[0]
    assert api_key_hash(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    # nor anywhere in the database's files (the WAL included)
    for f in tmp_path.glob("enrollment.sqlite*"):
        assert key[13:].encode() not in f.read_bytes(), f

    stored = [k for k in listed(cli) if k["source"] == "store"]
    assert stored == [
        {"id": key_id, "name": "ci bot", "role": "query", "source": "store", "form": "hash",
         "created_at": stored[0]["created_at"], "revoked_at": None}
    ]  # fmt: skip
    table = cli("keys", "list")
    assert key_id in table.stdout and "active" in table.stdout and key[13:] not in table.stdout


def test_given_a_running_app_when_a_key_is_revoked_then_its_next_request_is_refused(cli):
    key = create_key(cli, "reader", "query")
    other = create_key(cli, "enroller", "enroll")
    with TestClient(create_app(cli.settings, load_model=False)) as client:
        assert client.get("/index", headers={"X-API-Key": key}).status_code == 200
        # the stored role holds: an enroll key may not rebuild the index
        assert client.post("/index/rebuild", headers={"X-API-Key": other}).status_code == 403

        r = cli("keys", "revoke", key[4:12])
        assert r.exit_code == 0 and "revoked" in r.stdout, r.output
        refused = client.get("/index", headers={"X-API-Key": key})
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert client.get("/people", headers={"X-API-Key": other}).status_code == 200

    revoked = {k["id"]: k for k in listed(cli)}[key[4:12]]
    assert revoked["revoked_at"] is not None
    assert cli("keys", "revoke", "0000beef").exit_code == 1
    assert cli("keys", "create", "x", "--role", "root").exit_code == 2


def test_given_a_key_that_looks_stored_but_is_not_then_refused(cli):
    key = create_key(cli, "reader", "query")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")  # same id, wrong secret
    with TestClient(create_app(cli.settings, load_model=False)) as client:
        assert client.get("/index", headers={"X-API-Key": forged}).status_code == 401
        assert client.get("/index", headers={"X-API-Key": key}).status_code == 200


def write_config(path: Path, keys: list[dict]) -> Path:
    config = {"data_dir": str(path.parent / "data"),
              "api": {"environment": "production", "keys": keys}}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def test_given_production_when_a_key_is_in_plain_text_then_refused_clearly(cli, tmp_path):
    plain = write_config(tmp_path / "plain.yaml", [{"name": "ops", "key": PLAIN, "role": "admin"}])
    with pytest.raises(ValidationError, match=r"\['ops'\] are given in plain text"):
        load_settings(plain)
    for command in (["keys", "list"], ["api"]):
        r = cli(*command, "--config", str(plain))
        assert r.exit_code == 2 and "key_hash" in r.output, r.output
    # the development default (the placeholder key) is plain text too
    with pytest.raises(ValidationError, match="dev-admin"):
        Settings(api={"environment": "production"})


def test_given_production_with_a_key_hash_then_the_key_works_and_no_other(cli, tmp_path):
    key = "configured-" + uuid.uuid4().hex
    printed = cli("keys", "hash", stdin=key + "\n")
    assert printed.exit_code == 0 and printed.stdout.strip() == api_key_hash(key)
    hashed = [{"name": "ops", "key_hash": printed.stdout.strip(), "role": "admin"}]
    settings = load_settings(write_config(tmp_path / "prod.yaml", hashed))
    assert settings.api.keys[0].key is None
    with TestClient(create_app(settings, load_model=False)) as client:
        assert client.get("/people", headers={"X-API-Key": key}).status_code == 200
        assert client.get("/people", headers={"X-API-Key": key + "x"}).status_code == 401
        assert (
            client.get("/people", headers={"X-API-Key": printed.stdout.strip()}).status_code == 401
        )


def test_given_a_configured_key_then_exactly_one_form_and_a_well_formed_hash():
    with pytest.raises(ValidationError, match="exactly one of key, key_hash"):
        Settings(api={"keys": [{"name": "a", "role": "admin"}]})
    both = {"name": "a", "key": PLAIN, "key_hash": api_key_hash(PLAIN), "role": "admin"}
    with pytest.raises(ValidationError, match="exactly one of key, key_hash"):
        Settings(api={"keys": [both]})
    with pytest.raises(ValidationError, match="key_hash"):
        Settings(api={"keys": [{"name": "a", "key_hash": "md5:abc", "role": "admin"}]})


@pytest.mark.integration
def test_given_postgresql_when_keys_stored_then_hashed_found_and_revoked(postgres):
    store = EnrollmentStore(postgres.url, schema=f"t_keys_{uuid.uuid4().hex[:12]}")
    store.create_schema()
    try:
        keys = KeyStore(store)
        made, key = keys.create("ops", "admin")
        assert keys.lookup(key) == made
        assert keys.lookup(key[:-1] + ("a" if key[-1] != "a" else "b")) is None
        with store.engine.connect() as conn:
            dumped = str(conn.execute(select(api_keys)).all())
        assert key[13:] not in dumped and api_key_hash(key) in dumped
        keys.revoke(made.id)
        assert keys.lookup(key) is None
        assert [k.active for k in keys.list()] == [False]
    finally:
        store.drop_schema()
        store.close()
