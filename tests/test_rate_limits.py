"""Rate limits per key and route class, as a client meets them: ``facerec api`` served by
uvicorn on a loopback port (its own process, face engine loaded), and the load fired by a
second process (threads over real HTTP), which reports every status and Retry-After.

Limits under test (api.rate_limits): query keys may search 5 at once refilled at 30 a
minute (Retry-After 2 s when drained) and recognise 3 at once at 1 a minute; admin keys
search without limit. Bounds allow for the tokens a slow (busy) machine regains meanwhile."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from facerec.config import api_key_hash, load_settings
from index_builder.keys import KeyStore
from index_builder.store import EnrollmentStore
from jobs.services.process import free_port

ROOT = Path(__file__).resolve().parents[1]
SEARCH_BURST, SEARCH_PER_MIN = 5, 30
RECOGNITION_BURST, RECOGNITION_PER_MIN = 3, 1
READER_KEY = "reader-key-" + "r" * 32
ADMIN_KEY = "admin-key-" + "a" * 32

# The second process: fires ``n`` requests over ``threads`` threads (or, ``honour``, one at
# a time until a 429, then once more after its Retry-After), and prints every answer's
# status, Retry-After and error as JSON.
LOAD = r"""
import json, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor

spec = json.loads(sys.argv[1])
body, ctype = None, None
if spec.get("file"):
    boundary = "facerecloadboundary"
    with open(spec["file"], "rb") as f:
        data = f.read()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{spec['field']}\"; "
            f"filename=\"face.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + (
            f"\r\n--{boundary}--\r\n").encode()
    ctype = f"multipart/form-data; boundary={boundary}"

def call(_=None):
    req = urllib.request.Request(spec["url"], data=body, method=spec["method"])
    req.add_header("X-API-Key", spec["key"])
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return {"status": r.status, "retry_after": None, "error": None}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "retry_after": e.headers.get("Retry-After"),
                "error": json.loads(e.read() or b"{}").get("error")}

start = time.monotonic()
if spec.get("honour"):
    answers = [call()]
    while answers[-1]["status"] != 429 and len(answers) < 100:
        answers.append(call())
    time.sleep(int(answers[-1]["retry_after"]))
    answers.append(call())
else:
    with ThreadPoolExecutor(spec["threads"]) as pool:
        answers = list(pool.map(call, range(spec["n"])))
print(json.dumps({"answers": answers, "elapsed_s": time.monotonic() - start}))
"""


def fire(url: str, key: str, n: int = 1, threads: int = 1, method: str = "GET",
         file: Path | None = None, field: str = "", honour: bool = False,
         ) -> tuple[list[dict], float]:  # fmt: skip
    spec = {"url": url, "key": key, "n": n, "threads": threads, "method": method,
            "file": str(file) if file else None, "field": field, "honour": honour}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", LOAD, json.dumps(spec)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    return result["answers"], result["elapsed_s"]


def upload_field(url: str, path: str) -> str:
    """The form field a route takes its image in, as the server's OpenAPI names it."""
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as r:  # noqa: S310
        spec = json.load(r)
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    body = spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    return next(n for n, p in body["properties"].items() if "contentMediaType" in p)


def refilled(elapsed_s: float, per_minute: int) -> int:
    """Tokens a bucket can have regained while a load ran."""
    return math.ceil(elapsed_s * per_minute / 60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`facerec api --config` in a process of its own on a free loopback port; the limits
    above, two configured keys (hash form, as production wants) and stored keys made by the
    tests while it runs."""
    work = tmp_path_factory.mktemp("rate-limits")
    port = free_port()
    config = work / "facerec.yaml"
    limit = {"per_minute": SEARCH_PER_MIN, "burst": SEARCH_BURST}
    recognition = {"per_minute": RECOGNITION_PER_MIN, "burst": RECOGNITION_BURST}
    config.write_text(yaml.safe_dump({
        "data_dir": str(work / "data"),
        "unknowns": {"refresh_interval_s": 0},
        "api": {
            "environment": "production",
            "host": "127.0.0.1",
            "port": port,
            "keys": [
                {"name": "reader", "key_hash": api_key_hash(READER_KEY), "role": "query"},
                {"name": "ops", "key_hash": api_key_hash(ADMIN_KEY), "role": "admin"},
            ],
            "rate_limits": {
                "query": {"search": limit, "recognition": recognition},
                "admin": {"search": None},
            },
        },
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}
    log = work / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli.main", "api", "--config", str(config)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"facerec api not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        store = EnrollmentStore.from_settings(load_settings(config))
        yield url, KeyStore(store)
        store.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def statuses(answers: list[dict]) -> Counter[int]:
    return Counter(a["status"] for a in answers)


def test_given_concurrent_reads_from_a_second_process_then_burst_served_rest_429(server):
    url, keys = server
    _, key = keys.create("load-a", "query")
    answers, elapsed = fire(f"{url}/index", key, n=40, threads=8)
    counts = statuses(answers)
    print(f"reads: {dict(counts)} in {elapsed:.2f} s")
    assert set(counts) == {200, 429}, counts
    assert SEARCH_BURST <= counts[200] <= SEARCH_BURST + refilled(elapsed, SEARCH_PER_MIN)
    limited = [a for a in answers if a["status"] == 429]
    assert all(a["error"] == "rate_limited" for a in limited)
    # drained, one token comes back every 60/30 = 2 s
    assert {int(a["retry_after"]) for a in limited} <= {1, 2}

    # per key: another query key (a configured one) has its own bucket, full
    other, _ = fire(f"{url}/index", READER_KEY, n=SEARCH_BURST, threads=4)
    assert statuses(other) == {200: SEARCH_BURST}
    # per role: admin keys search without limit
    admin, _ = fire(f"{url}/index", ADMIN_KEY, n=40, threads=8)
    assert statuses(admin) == {200: 40}


def test_given_a_429_when_the_client_waits_retry_after_then_served_again(server):
    url, keys = server
    _, key = keys.create("load-b", "query")
    answers, _ = fire(f"{url}/index", key, honour=True)
    *served, limited, after_wait = answers
    print("honour:", [a["status"] for a in answers], "Retry-After", limited["retry_after"])
    assert len(served) >= SEARCH_BURST and {a["status"] for a in served} == {200}
    assert limited["status"] == 429
    assert limited["retry_after"] is not None and 1 <= int(limited["retry_after"]) <= 2
    assert after_wait["status"] == 200


def test_given_reads_drained_then_recognition_counted_apart_and_limited(server, portraits):
    url, keys = server
    _, key = keys.create("load-c", "query")
    reads, read_s = fire(f"{url}/index", key, n=SEARCH_BURST + 3, threads=4)
    assert statuses(reads)[429] >= 3 - refilled(read_s, SEARCH_PER_MIN)
    photo = next(iter(portraits.values()))[0]
    field = upload_field(url, "/recognize")
    answers, elapsed = fire(
        f"{url}/recognize", key, n=6, threads=2, method="POST", file=photo, field=field
    )
    counts = statuses(answers)
    print(f"recognitions: {dict(counts)} in {elapsed:.2f} s")
    assert set(counts) == {200, 429}, counts
    assert RECOGNITION_BURST <= counts[200]
    assert counts[200] <= RECOGNITION_BURST + refilled(elapsed, RECOGNITION_PER_MIN)
    retry = {int(a["retry_after"]) for a in answers if a["status"] == 429}
    assert retry and max(retry) <= 60 // RECOGNITION_PER_MIN
