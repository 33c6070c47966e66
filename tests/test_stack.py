"""`facerec stack`: the whole system on one machine, started the way a user starts it. The
stack comes up on free loopback ports in a temporary folder (events in SQLite, no Cassandra,
to keep it short) with a camera playing a walk-through video in a loop; a person enrolled
through the API must then appear in `GET /events`. `status`, a second `up` (a no-op),
Prometheus' targets and `logs` are checked on the running stack, and `down` must end every
process the stack recorded and nothing else. Prints how long `up` took per component
(`pytest -s`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from jobs.services.pids import Procs, alive, identify, with_descendants
from testkit.dashboard import compose_only, panel_queries
from testkit.videos import CELEBRITY5_THRESHOLD

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.data]
FACEREC = str(Path(sys.executable).parent / "facerec")
PERSON = "ben_afflek"
CAMERA = "door-1"


def stack(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([FACEREC, "stack", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    shown = "\n".join(done.stdout.splitlines()[-25:])
    print(f"$ facerec stack {' '.join(args)}  (rc {done.returncode})\n{shown}")
    return done


def http_json(url: str, key: str | None = None, data: bytes | None = None,
              content_type: str | None = None, timeout: float = 30) -> Any:
    headers = {"X-API-Key": key} if key else {}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
        return json.load(r)


def multipart(field: str, path: Path) -> tuple[bytes, str]:
    boundary = "facerec-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
        f"filename=\"{path.name}\"\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def recorded(state_file: Path) -> dict[str, Procs]:
    components = json.loads(state_file.read_text())["components"]
    return {name: {int(p): t for p, t in (rec.get("pids") or {}).items()}
            for name, rec in components.items() if rec.get("pids")}


@pytest.fixture
def decoys(tmp_path: Path) -> Iterator[Procs]:
    """Processes the stack must leave alone: started before it, one with the stack's folder
    in its command line (what a stop by name or pattern would hit)."""
    argv = [sys.executable, "-c", "import time; time.sleep(3600)"]
    procs = [subprocess.Popen([*argv, str(tmp_path / "stack" / name)])
             for name in ("kafka", "flink", "api")]
    yield identify(p.pid for p in procs)
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def scene(tmp_path: Path, celebrity5: Path) -> tuple[Path, Path]:
    """A camera looping a walk-through of PERSON (a celebrity5 val photo), 5 frames/s in
    real time, and a base configuration with the threshold the celebrity5 tests use."""
    from jobs.walkthrough import Segment, write_face_video
    from udfs.evaluation import list_identities

    val = list_identities(celebrity5 / "val")
    write_face_video(tmp_path / "door.avi", [Segment(PERSON, val[PERSON][0], 10, 20)], fps=10)
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(yaml.safe_dump({"cameras": [{
        "camera_id": CAMERA, "url": "door.avi", "region": CAMERA, "fps": 5, "loop": 0,
        "realtime": True,
    }]}))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "match": {"threshold": CELEBRITY5_THRESHOLD},
        # offsets reach the group sooner: the lag in `status` is the committed one
        "job": {"checkpoint_interval_ms": 3000},
    }))
    return cameras, base


def enroll(api: str, key: str, photos: list[Path], wanted: int = 3) -> int:
    """Create PERSON and enroll photos one at a time until ``wanted`` are accepted (a
    photo without exactly one good face is refused with 422 and passed over)."""
    http_json(f"{api}/people", key, json.dumps({"id": PERSON, "display_name": "Ben"}).encode(),
              "application/json")
    enrolled = 0
    for photo in photos:
        body, content_type = multipart("image", photo)
        try:
            http_json(f"{api}/people/{PERSON}/faces", key, body, content_type, timeout=120)
            enrolled += 1
        except urllib.error.HTTPError as exc:
            if exc.code != 422:
                raise
        if enrolled == wanted:
            break
    return enrolled


def test_given_cameras_when_stack_up_then_an_enrolled_person_is_recognised_and_down_stops_only_the_stack(  # noqa: E501
    tmp_path, scene, portraits, decoys
):
    cameras, base = scene
    stack_dir = tmp_path / "stack"
    where = ["--stack-dir", str(stack_dir)]
    up_args = [*where, "--free-ports", "--cameras", str(cameras), "--config", str(base)]
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        phases[name] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    try:
        up = stack("up", *up_args, timeout=900)
        phase("up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        state = json.loads((stack_dir / "state.json").read_text())["components"]
        print("up per component (s):", {n: rec.get("startup_s") for n, rec in state.items()})
        assert set(state) == {"kafka", "postgres", "flink", "prometheus", "api", "ingest", "job"}
        procs_up = recorded(stack_dir / "state.json")

        plan = json.loads((stack_dir / "stack.json").read_text())
        settings = yaml.safe_load((stack_dir / "facerec.yaml").read_text())
        assert settings["match"]["threshold"] == CELEBRITY5_THRESHOLD  # the base config
        assert settings["ingest"]["cameras"][0]["url"] == str(cameras.parent / "door.avi")
        api = f"http://127.0.0.1:{plan['ports']['api']}"
        key = plan["api_key"]

        # ---------------------------------------------------------------- recognition
        enrolling_ms = int(time.time() * 1000)
        assert enroll(api, key, portraits[PERSON]) == 3
        phase("enroll")

        def named() -> list[dict[str, Any]]:
            page = http_json(f"{api}/events?identity={PERSON}&camera_id={CAMERA}&limit=50", key)
            return list(page["items"])

        events = wait_for(named, 240, f"events naming {PERSON} in GET /events")
        assert {e["identity"] for e in events} == {PERSON}
        assert {e["camera_id"] for e in events} == {CAMERA}
        print(f"first event naming {PERSON} "
              f"{(min(e['stages']['match'] for e in events) - enrolling_ms) / 1000:.0f} s "
              "after the enrollment began")
        phase("events")

        # ---------------------------------------------------------------- status
        def status_json() -> dict[str, Any]:
            done = stack("status", *where, "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            return dict(json.loads(done.stdout))

        report = status_json()
        states = {c["name"]: c["state"] for c in report["components"]}
        assert states == {"kafka": "running", "postgres": "running", "cassandra": "disabled",
                          "flink": "running", "prometheus": "running", "api": "running",
                          "ingest": "running"}
        assert report["job"]["state"] == "RUNNING"
        assert report["job"]["job_id"] == state["job"]["job_id"]
        lag = report["job"]["lag"]
        if not lag["committed_offsets"]:  # before the job's first checkpoint completed
            lag = wait_for(lambda: status_json()["job"]["lag"]["committed_offsets"]
                           and status_json()["job"]["lag"], 60, "committed offsets in status")
        assert lag["topic"] == "facerec.frames" and lag["committed_lag"] >= 0
        text = stack("status", *where)
        assert text.returncode == 0
        assert "lag of facerec.frames (group facerec-recognition)" in text.stdout
        for name, pids in procs_up.items():
            line = next(ln for ln in text.stdout.splitlines() if ln.startswith(f"{name} "))
            assert " running " in line and str(next(iter(pids))) in line, line

        # ---------------------------------------------------------------- Prometheus
        prom = f"http://127.0.0.1:{plan['ports']['prometheus']}"

        def targets_up() -> dict[str, int] | None:
            found = http_json(f"{prom}/api/v1/targets?state=active")["data"]["activeTargets"]
            up = {}
            for t in found:
                job = t["labels"]["job"]
                up[job] = up.get(job, 0) + (t["health"] == "up")
            ok = up.get("flink", 0) >= 2 and up.get("api", 0) == 1 and up.get("ingest", 0) == 1
            return up if ok else None

        phase("status")
        print("Prometheus targets up per job:", wait_for(targets_up, 60, "targets up"))

        # every dashboard panel shows data once events flow (but what only compose exports)
        def panels_without_data() -> list[str]:
            empty = []
            for title, exprs in panel_queries().items():
                ours = [e for e in exprs if not compose_only(e)]
                if ours and not any(
                    http_json(f"{prom}/api/v1/query?{urlencode({'query': e})}")["data"]["result"]
                    for e in ours
                ):
                    empty.append(title)
            return empty

        empty: list[str] = []

        def all_panels_have_data() -> bool:
            nonlocal empty
            empty = panels_without_data()
            return not empty

        try:
            wait_for(all_panels_have_data, 120, "data in every dashboard panel")
        except AssertionError:
            raise AssertionError(f"dashboard panels without data: {empty}") from None
        # the job's metrics as deploy/prometheus relabels them, and the alert rules loaded
        def query(expr: str) -> list[dict[str, Any]]:
            return list(http_json(f"{prom}/api/v1/query?{urlencode({'query': expr})}")
                        ["data"]["result"])

        buckets = {r["metric"]["le"] for r in query("facerec_job_latency_ms_bucket")}
        assert "+Inf" in buckets and "_Inf" not in buckets, buckets
        # Flink's Prometheus reporter writes the camera's '-' as '_' in label values
        cameras = {r["metric"]["camera"] for r in query("facerec_job_frames_in")}
        assert cameras == {CAMERA.replace("-", "_")}, cameras
        assert not query('{__name__=~"flink_taskmanager_job_task_operator_facerec_.*"}'), (
            "the relabel rule of deploy/prometheus/prometheus.yml missed a user metric")
        rules = http_json(f"{prom}/api/v1/rules")["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) >= 9
        phase("prometheus")

        # ---------------------------------------------------------------- a second up
        again = stack("up", *up_args, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing started" in again.stdout
        assert recorded(stack_dir / "state.json") == procs_up
        phase("second up")

        logs = stack("logs", "api", *where, "-n", "3")
        assert logs.returncode == 0 and "==> api:" in logs.stdout
        phase("logs")

        # ---------------------------------------------------------------- down
        ours = with_descendants({p: t for procs in procs_up.values() for p, t in procs.items()})
        down = stack("down", *where, timeout=600)
        phase("down")
        assert down.returncode == 0, down.stdout + down.stderr
        left = {p: t for p, t in ours.items() if alive(p, t)}
        assert not left, f"still running after down: {left}"
        assert all(alive(p, t) for p, t in decoys.items()), "down ended a process not its own"
        assert json.loads((stack_dir / "state.json").read_text())["components"] == {}
        after = stack("status", *where, "--json")
        assert after.returncode == 3
        assert {c["state"] for c in json.loads(after.stdout)["components"]} == {
            "stopped", "disabled"
        }
        print("test phases (s):", phases)
    finally:
        if (stack_dir / "state.json").is_file():
            stack("down", *where, timeout=600)
        pg = stack_dir / "postgres"
        if pg.is_symlink():  # as root: the cluster's folder is under the postgres user's home
            shutil.rmtree(pg.resolve(), ignore_errors=True)
            with suppress(OSError):  # the folder of such clusters, if no other is left
                pg.resolve().parent.rmdir()


def test_given_a_recorded_pid_now_naming_another_process_when_down_then_it_is_left_alone(
    tmp_path,
):
    """A PID recorded by `up` and given to another process since (the stack's process
    exited, the number was reused) is not the stack's: `down` says so and signals nothing."""
    from jobs.stack.plan import Plan, StackDir

    folder = StackDir(tmp_path / "stack")
    folder.create()
    folder.write_plan(Plan.new(free=True, cassandra=False, cameras=None, config=None))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        (since,) = identify([stranger.pid]).values()
        wrong = str(int(since) - 100)  # what the exited process's start time was
        folder.write_state({"api": {"pids": {str(stranger.pid): wrong}, "address": ""}})
        down = stack("down", "--stack-dir", str(folder.root))
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"PID {stranger.pid} now names another process: left alone" in down.stdout
        assert alive(stranger.pid, since)
        assert stranger.poll() is None
    finally:
        os.kill(stranger.pid, signal.SIGKILL)
        stranger.wait()
