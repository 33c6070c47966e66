"""Submit the job to a real standalone Flink cluster started from the apache-flink wheel's
distribution (start-cluster.sh with flink-conf/), see its events, stop the cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from jobs.services.process import free_port

pytestmark = [pytest.mark.flink, pytest.mark.integration, pytest.mark.data]
ROOT = Path(__file__).resolve().parents[1]


def _flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    conf_dir = tmp_path_factory.mktemp("flink-conf")
    for f in (ROOT / "flink-conf").iterdir():
        shutil.copy(f, conf_dir / f.name)
    config = yaml.safe_load((conf_dir / "config.yaml").read_text())
    rest_port, rpc_port = free_port(), free_port()
    config["rest"]["port"] = rest_port
    config["jobmanager"]["rpc"]["port"] = rpc_port
    work = tmp_path_factory.mktemp("flink-work")
    config["execution"]["checkpointing"]["dir"] = (work / "checkpoints").as_uri()
    config["execution"]["checkpointing"]["savepoint-dir"] = (work / "savepoints").as_uri()
    prom = free_port()
    config["metrics"]["reporter"]["prom"]["port"] = f"{prom}-{prom + 5}"
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (conf_dir / "masters").write_text(f"localhost:{rest_port}\n")
    (work / "log").mkdir()
    env = {**os.environ, "FLINK_CONF_DIR": str(conf_dir), "FLINK_LOG_DIR": str(work / "log")}
    bin_dir = _flink_home() / "bin"
    subprocess.run([str(bin_dir / "start-cluster.sh")], env=env, check=True, timeout=120)
    url = f"http://localhost:{rest_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                overview = json.load(urllib.request.urlopen(f"{url}/overview", timeout=2))
                if overview.get("taskmanagers", 0) >= 1:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flink cluster did not come up; logs in {work / 'log'}")
            time.sleep(1)
        yield {
            "rest": f"localhost:{rest_port}",
            "url": url,
            "env": env,
            "prom_port": prom,
            "log": work / "log",
        }
    finally:
        subprocess.run([str(bin_dir / "stop-cluster.sh")], env=env, timeout=120, check=False)


def _world(tmp_path: Path, engine, celebrity5: Path, names: list[str]):
    """A published snapshot of ``names`` (celebrity5 train) in ``tmp_path/data`` and a
    10 fps video of them walking in (val photos). Returns (data dir, video, snapshot)."""
    from index_builder.publish import IndexPublisher
    from index_builder.snapshot import write_snapshot
    from jobs.walkthrough import Segment, write_face_video
    from testkit.videos import gallery_from_photos
    from udfs.evaluation import list_identities

    data = tmp_path / "data"
    val = list_identities(celebrity5 / "val")
    tids, pids, vecs = gallery_from_photos(engine, celebrity5 / "train", 4, names, skip=3)
    info = write_snapshot(
        data / "snapshots", tids, pids, vecs, model_id=engine.model_id, max_change_seq=0
    )
    IndexPublisher(data / "manifests").publish_snapshot(info)
    video = tmp_path / "people.avi"
    write_face_video(video, [Segment(n, val[n][0], 6, 4) for n in names], fps=10)
    return data, video, info


def test_given_standalone_cluster_when_job_submitted_then_events_stored(
    cluster, tmp_path, engine, celebrity5
):
    from facerec.config import Settings
    from facerec.eventstore import open_event_store
    from jobs.submit import submit_command

    names = ["ben_afflek", "madonna"]
    data, video, _ = _world(tmp_path, engine, celebrity5, names)
    config = tmp_path / "facerec.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(data),
                "job": {"parallelism": 2, "video": {"realtime": False, "region": "gate-1"}},
            }
        )
    )

    cmd = submit_command(f"video:{video}", cluster["rest"], config, None, detached=False)
    result = subprocess.run(
        cmd, env=cluster["env"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    jobs = json.load(urllib.request.urlopen(f"{cluster['url']}/jobs/overview", timeout=5))["jobs"]
    assert [j["state"] for j in jobs if j["name"] == "facerec-recognition"] == ["FINISHED"]
    with open_event_store(Settings(data_dir=data)) as store:
        events, _ = store.search(limit=500)
    assert events, "the cluster job stored no event"
    assert {e.identity for e in events} == set(names)
    assert {e.region for e in events} == {"gate-1"}


def _flink(cluster, *args: str) -> str:
    from jobs.submit import flink_bin

    result = subprocess.run(
        [str(flink_bin()), *args],
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _wait_for_events(settings, n: int, timeout_s: float) -> list:
    from facerec.eventstore import open_event_store

    deadline = time.monotonic() + timeout_s
    while True:
        with open_event_store(settings) as store:
            events, _ = store.search(limit=500)
        if len(events) >= n:
            return events
        assert time.monotonic() < deadline, f"fewer than {n} events after {timeout_s} s"
        time.sleep(1)


def test_given_running_job_when_stopped_with_savepoint_then_submit_resumes_it(
    cluster, tmp_path, engine, celebrity5
):
    """`flink stop --savepointPath`, then `facerec job submit --from-savepoint`: the resumed
    job gets no index message (empty manifests dir) yet matches with the snapshot it had."""
    import re

    from facerec.config import Settings
    from jobs.submit import submit_command

    names = ["jerry_seinfeld", "mindy_kaling"]
    data, video, info = _world(tmp_path, engine, celebrity5, names)
    job = {"video": {"realtime": True, "loop": 100, "region": "gate-2"}}

    def submit(name: str, extra: dict, savepoint: str | None = None) -> tuple[Settings, str]:
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"data_dir": str(data), "job": job, **extra}))
        cmd = submit_command(f"video:{video}", cluster["rest"], config, None, True, savepoint)
        out = _flink(cluster, *cmd[1:])  # cmd[0] is the flink launcher
        job_id = re.search(r"JobID ([0-9a-f]{32})", out)
        assert job_id, out
        settings = Settings(data_dir=data, **extra)
        return settings, job_id.group(1)

    first, job_id = submit("first", {})
    _wait_for_events(first, 3, 240)
    out = _flink(
        cluster,
        "stop",
        "-m",
        cluster["rest"],
        "--savepointPath",
        (tmp_path / "savepoints").as_uri(),
        job_id,
    )
    savepoint = re.search(r"Savepoint completed\. Path: (\S+)", out)
    assert savepoint, out

    empty = tmp_path / "no-manifests"
    empty.mkdir()
    resumed, job_id = submit(
        "resumed",
        {
            "index": {"manifests_dir": str(empty)},
            "events": {"sqlite_path": str(tmp_path / "resumed.sqlite")},
        },
        savepoint.group(1),
    )
    try:
        events = _wait_for_events(resumed, 5, 240)
    finally:
        _flink(cluster, "cancel", "-m", cluster["rest"], job_id)
    assert {e.snapshot_id for e in events} == {info.manifest["snapshot_id"]}
    assert {e.identity for e in events} <= set(names)
