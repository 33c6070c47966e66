"""``facerec sightings`` as a user runs it: listing with the filters of GET /sightings (a
table, or JSON lines), ``--follow`` printing new and updated sightings as they reach the
event store (in-process with ``--max-seconds``, and as a real process stopped with Ctrl-C),
and ``facerec people delete`` removing the person's sighting evidence. The SQLite event
store and the local evidence folder; crops cut from real face photos."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from test_api_sightings import acceptable
from typer.testing import CliRunner

from facerec.config import Settings
from facerec.eventstore import open_event_store
from facerec.evidence import open_evidence_store, sighting_key
from facerec.records import UNKNOWN, Sighting, now_ms
from index_builder.store import EnrollmentStore
from jobs.cli.main import app
from udfs.evidence import face_jpeg

ROOT = Path(__file__).resolve().parents[1]
T0 = (now_ms() // 1000 - 3 * 86_400) * 1000


def sighting(
    identity: str = UNKNOWN,
    camera_id: str = "cam-1",
    region: str = "lobby",
    first_seen_ms: int = T0,
    frames: int = 3,
    evidence_key: str | None = None,
    sighting_id: str | None = None,
) -> Sighting:
    return Sighting(
        sighting_id=sighting_id or uuid.uuid4().hex,
        camera_id=camera_id,
        region=region,
        status="open",
        identity=identity,
        first_seen_ms=first_seen_ms,
        last_seen_ms=first_seen_ms + 1_000,
        frames=frames,
        votes={identity: frames},
        best_distance=0.7,
        best_quality=0.8,
        best_frame_id="f-1",
        best_box=(10.0, 10.0, 90.0, 90.0),
        evidence_key=evidence_key,
        snapshot_id="snap-test",
        model_id="facenet-test",
        threshold=1.05,
    )


@pytest.fixture
def data(tmp_path):
    settings = Settings(data_dir=tmp_path)
    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": ""}
    store = open_event_store(settings)
    yield settings, env, store
    store.close()


def run(env, *args: str):
    return CliRunner().invoke(app, ["sightings", *args], env=env)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_given_sightings_when_listed_then_filters_table_and_json(data):
    _, env, store = data
    made = [
        sighting("madonna", "cam-1", "lobby", T0 + 1000),
        sighting(UNKNOWN, "cam-1", "lobby", T0 + 2000),
        sighting("elton", "cam-2", "gate", T0 + 3000),
        sighting(UNKNOWN, "cam-2", "gate", T0 + 4000),
    ]
    store.write_sightings(made)
    ids = [s.sighting_id for s in made]

    r = run(env)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("first seen (UTC)") and "identity" in lines[0]
    assert [line.split()[-1] for line in lines[1:]] == ids[::-1]  # newest first
    assert "madonna" in lines[-1] and "cam-1" in lines[-1] and "0.700" in lines[-1]
    assert "4 sighting(s)" in r.stderr

    def listed(*args: str) -> list[str]:
        r = run(env, "--json", *args)
        assert r.exit_code == 0, r.output
        return [d["sighting_id"] for d in json_lines(r.stdout)]

    assert listed() == ids[::-1]
    assert listed("--camera", "cam-2") == [ids[3], ids[2]]
    assert listed("--region", "lobby", "--unknown") == [ids[1]]
    assert listed("--named") == [ids[2], ids[0]]
    assert listed("--person", "elton") == [ids[2]]
    assert listed("--start-ms", str(T0 + 2000), "--end-ms", str(T0 + 4000)) == [ids[2], ids[1]]
    assert listed("--limit", "2") == [ids[3], ids[2]]
    assert listed("--since", "1") == []  # nothing first seen in the last minute
    whole = json_lines(run(env, "--json", "--person", "madonna").stdout)[0]
    assert Sighting.from_dict(whole) == made[0]

    r = run(env, "--start-ms", "5", "--end-ms", "5")
    assert r.exit_code == 2 and "empty time range" in r.output
    r = run(env, "--since", "5", "--start-ms", "5")
    assert r.exit_code == 2


def test_given_follow_then_new_and_updated_sightings_are_printed(data):
    _, env, store = data
    old = sighting("madonna", first_seen_ms=T0)
    store.write_sightings([old])
    newcomer = sighting(UNKNOWN, "cam-2", first_seen_ms=T0 + 5000)
    other_camera = sighting(UNKNOWN, "cam-9", first_seen_ms=T0 + 6000)

    def job() -> None:  # the job writes while the command follows
        time.sleep(0.6)
        store.write_sightings([newcomer, other_camera])
        time.sleep(0.6)
        store.write_sightings([replace(old, frames=7, status="closed", updated_ms=now_ms())])

    writer = threading.Thread(target=job)
    writer.start()
    started = time.monotonic()
    r = run(
        env, "--follow", "--json", "--camera", "cam-2", "--interval", "0.1", "--max-seconds", "2.5"
    )
    writer.join()
    assert r.exit_code == 0, r.output
    assert 2.4 < time.monotonic() - started < 10
    got = json_lines(r.stdout)
    # nothing of cam-2 listed at first; then the newcomer, not the other cameras' ones
    assert [d["sighting_id"] for d in got] == [newcomer.sighting_id]

    r = run(env, "--follow", "--json", "--interval", "0.1", "--max-seconds", "0.5")
    got = json_lines(r.stdout)
    assert [d["sighting_id"] for d in got] == [
        old.sighting_id,
        newcomer.sighting_id,
        other_camera.sighting_id,
    ]  # oldest first when following
    assert got[0]["frames"] == 7 and got[0]["status"] == "closed"


def test_given_follow_in_a_process_then_updates_stream_until_ctrl_c(data):
    _, env, store = data
    old = sighting("madonna", first_seen_ms=T0)
    store.write_sightings([old])
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli.main", "sightings", "--follow", "--interval", "0.2"],
        cwd=ROOT,
        env=os.environ | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # unread, a pipe could fill and block the command
        text=True,
        # Ctrl-C as a terminal sends it: a suite started in the background by a
        # non-interactive shell (`make test &`) has SIGINT ignored, children inherit that,
        # and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def next_line() -> str:
        return lines.get(timeout=30)

    try:
        first = [next_line(), next_line()]  # header and the listing
        assert first[0].startswith("first seen") and old.sighting_id in first[1]
        fresh = sighting(UNKNOWN, "cam-3", first_seen_ms=T0 + 1000)
        store.write_sightings([fresh])
        line = next_line()
        assert fresh.sighting_id in line and "cam-3" in line and "unknown" in line
        store.write_sightings([replace(old, frames=9, updated_ms=now_ms())])
        line = next_line()
        assert old.sighting_id in line and " 9 " in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


@pytest.mark.data
def test_given_sightings_of_person_when_people_delete_then_their_evidence_goes(
    data, portraits, engine
):
    settings, env, store = data
    people = EnrollmentStore.from_settings(settings)
    people.create_person("Madonna", person_id="madonna")
    people.close()
    evidence = open_evidence_store(settings)
    made = []
    hers = acceptable(portraits["madonna"], engine)
    his = acceptable(portraits["elton_john"], engine)
    cases = [("madonna", hers[0]), ("madonna", hers[1]), (UNKNOWN, his[0])]
    for i, (pid, photo) in enumerate(cases):
        data_ = photo.read_bytes()
        face = engine.single_face(data_)
        s = sighting(pid, first_seen_ms=T0 + i * 86_400_000)
        s = replace(s, evidence_key=sighting_key(s.sighting_id, s.first_seen_ms))
        evidence.put(s.evidence_key, face_jpeg(engine.decode(data_), face, settings))
        made.append(s)
    store.write_sightings(made)
    r = CliRunner().invoke(app, ["people", "delete", "madonna"], env=env)
    assert r.exit_code == 0, r.output
    assert "2 evidence object(s) removed" in r.stdout
    assert [evidence.exists(s.evidence_key) for s in made] == [False, False, True]
    evidence.close()
