"""Hostile clients against a real ``facerec api`` (uvicorn with jobs/cli/api.py's guarded
protocol) on loopback, one test per attack: a 50 MB upload, a decompression bomb, bodies that
never end, 1,000 slow clients. During each attack another client's ordinary request must be
answered within a few seconds, and the server's peak memory (reset before the attack through
/proc/<pid>/clear_refs) may grow by a bounded amount only."""

from __future__ import annotations

import asyncio
import io
import resource
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from api.schemas import UPLOAD_FIELD
from jobs.services.process import LOOPBACK, free_port
from jobs.stack.components import FacerecProcess

KEY = "admin-key-0123456789"
HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 15.0
MAX_UPLOAD_BYTES = 60_000_000  # api.max_upload_bytes' default, written out for the checks
OTHER_CLIENT_S = 3.0  # the longest an ordinary request may take during an attack
MB = 1 << 20


class Server:
    def __init__(self, proc: FacerecProcess, port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://{LOOPBACK}:{port}"

    @contextmanager
    def peak_rss_growth(self) -> Iterator[list[int]]:
        """Yields a list that holds, after the block, how far the server's peak resident
        memory rose above its resident memory before the block (bytes)."""
        status = Path(f"/proc/{self.proc.pid}/status")
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # peak := current
        before = _kb(status.read_text(), "VmRSS")
        growth: list[int] = []
        yield growth
        growth.append((_kb(status.read_text(), "VmHWM") - before) * 1024)

    @contextmanager
    def other_client(self) -> Iterator[list[float]]:
        """Another client asks GET /people every 0.5 s during the block, each time on a new
        connection; after the block every answer must have been a 200 within
        ``OTHER_CLIENT_S``. Yields the latencies."""
        latencies: list[float] = []
        failures: list[str] = []
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    r = httpx.get(
                        f"{self.url}/people", headers={"X-API-Key": KEY}, timeout=OTHER_CLIENT_S
                    )
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                latencies.append(time.monotonic() - start)
                stop.wait(0.5)

        thread = threading.Thread(target=ask, name="other-client", daemon=True)
        thread.start()
        try:
            yield latencies
        finally:
            stop.set()
            thread.join(OTHER_CLIENT_S + 5)
        assert not failures, f"the other client was not served: {failures[:5]}"
        assert latencies and max(latencies) < OTHER_CLIENT_S, latencies


def _kb(status: str, field: str) -> int:
    line = next(ln for ln in status.splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("hostile-api")
    port = free_port()
    config = {
        "data_dir": str(work / "data"),
        "api": {
            "port": port,
            "keys": [{"name": "admin-test", "key": KEY, "role": "admin"}],
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": BODY_TIMEOUT_S,
        },
        "unknowns": {"refresh_interval_s": 0},
    }
    (work / "facerec.yaml").write_text(yaml.safe_dump(config))
    proc = FacerecProcess(
        "api",
        work,
        ["api", "--config", str(work / "facerec.yaml")],
        f"http://{LOOPBACK}:{port}/readyz",
        startup_timeout_s=240,
    )
    proc.start()
    try:
        yield Server(proc, port)
    finally:
        proc.terminate()


def test_given_a_50mb_upload_when_posted_then_413_without_holding_it_in_memory(server):
    data = np.random.default_rng(0).integers(0, 256, 50_000_000, np.uint8).tobytes()
    with server.other_client(), server.peak_rss_growth() as growth:
        r = httpx.post(
            f"{server.url}/recognize",
            files={UPLOAD_FIELD: ("big.jpg", data, "image/jpeg")},
            headers={"X-API-Key": KEY},
            timeout=60,
        )
    print(f"50 MB upload: {r.status_code}, peak RSS +{growth[0] / MB:.1f} MB")
    assert r.status_code == 413 and r.json()["error"] == "image_too_large", r.text
    assert "50000000 bytes" in r.json()["detail"]
    # the parser spools the part to disk; the route refuses it from its size, unread
    assert growth[0] < 10 * MB, f"peak RSS grew {growth[0] / MB:.1f} MB"


def test_given_a_decompression_bomb_when_uploaded_then_413_before_decoding(server):
    """64 megapixels of one grey (192 MB as BGR) in a 60 KB PNG: above images.max_pixels
    (40 M), below PIL's own bomb limit (89 M): only our header check stands in the way."""
    out = io.BytesIO()
    Image.new("L", (8000, 8000), 128).save(out, "PNG", optimize=True)
    bomb = out.getvalue()
    assert len(bomb) < 300_000
    with server.other_client(), server.peak_rss_growth() as growth:
        start = time.monotonic()
        r = httpx.post(
            f"{server.url}/recognize",
            files={UPLOAD_FIELD: ("bomb.png", bomb, "image/png")},
            headers={"X-API-Key": KEY},
            timeout=60,
        )
        took = time.monotonic() - start
    print(f"bomb: {r.status_code} in {took:.2f} s, peak RSS +{growth[0] / MB:.1f} MB")
    assert r.status_code == 413 and r.json()["error"] == "image_too_large", r.text
    assert "8000x8000 = 64000000 pixels" in r.json()["detail"]
    assert took < OTHER_CLIENT_S, took
    assert growth[0] < 10 * MB, f"peak RSS grew {growth[0] / MB:.1f} MB"


def _multipart_head(path: str = "/recognize", key: str | None = KEY) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: facerec\r\n".encode()
        + (b"X-API-Key: " + key.encode() + b"\r\n" if key is not None else b"")
        + b"Content-Type: multipart/form-data; boundary=xyzzy\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )


def _part_head(filename: str) -> bytes:
    return (
        f'--xyzzy\r\nContent-Disposition: form-data; name="{UPLOAD_FIELD}"; '
        f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _endless_body(
    port: int, pause_s: float, piece: bytes, answers: dict[str, object], name: str
) -> None:
    """A chunked multipart upload that never finishes, sent until the server answers."""
    start, sent = time.monotonic(), 0
    with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
        sock.sendall(_multipart_head() + _chunk(_part_head("endless.jpg")))
        try:
            while time.monotonic() - start < 120:
                sock.sendall(_chunk(piece))
                sent += len(piece)
                time.sleep(pause_s)
        except OSError:  # the server answered and closed the connection
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    answers[name] = (answer, sent, time.monotonic() - start)


def test_given_bodies_that_never_end_when_posted_then_cut_off_and_others_served(server):
    """One client streams zeros as fast as it can, one sends a byte a second; neither body
    ever ends. The first is refused once past api.max_upload_bytes (413), the second once
    api.body_timeout_s has passed (408); both connections are closed."""
    answers: dict[str, object] = {}
    clients = [
        threading.Thread(
            target=_endless_body, args=(server.port, 0.0, b"\0" * 65536, answers, "flood")
        ),
        threading.Thread(target=_endless_body, args=(server.port, 1.0, b"\0", answers, "trickle")),
    ]
    with server.other_client(), server.peak_rss_growth() as growth:
        for c in clients:
            c.start()
        for c in clients:
            c.join(BODY_TIMEOUT_S + 60)
    print({k: (v[0][:12], v[1], round(v[2], 1)) for k, v in answers.items()})  # type: ignore[index]
    assert set(answers) == {"flood", "trickle"}, f"answered only {sorted(answers)}"
    print(f"endless bodies: peak RSS +{growth[0] / MB:.1f} MB")
    flood, flood_sent, _ = answers["flood"]  # type: ignore[misc]
    assert flood.startswith(b"HTTP/1.1 413 "), flood[:300]
    assert b"request_too_large" in flood and b"connection: close" in flood.lower()
    assert MAX_UPLOAD_BYTES <= flood_sent < MAX_UPLOAD_BYTES + 20 * MB, flood_sent
    trickle, _, trickle_s = answers["trickle"]  # type: ignore[misc]
    assert trickle.startswith(b"HTTP/1.1 408 "), trickle[:300]
    assert b"request_timeout" in trickle
    assert BODY_TIMEOUT_S - 1 < trickle_s < BODY_TIMEOUT_S + 10, trickle_s
    assert growth[0] < 30 * MB, f"peak RSS grew {growth[0] / MB:.1f} MB"


@pytest.mark.parametrize("path", ["/recognize", "/verify", "/people/p1/faces"])
@pytest.mark.parametrize("key", [None, "not-a-key"], ids=["no-key", "unknown-key"])
def test_given_an_upload_without_a_known_key_when_posted_then_401_before_its_body(
    server, path, key
):
    """The upload has begun and is never finished: the answer cannot wait for it. Without
    the check before the body, the server would read on until api.body_timeout_s (408)."""
    with socket.create_connection((LOOPBACK, server.port), timeout=60) as sock:
        start = time.monotonic()
        sock.sendall(_multipart_head(path, key) + _chunk(_part_head("anonymous.jpg") + b"\xff"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert b"connection: close" in answer.lower() and b"www-authenticate: apikey" in answer.lower()
    assert b"unauthorized" in answer
    assert took < BODY_TIMEOUT_S - 1, took


def test_given_headers_that_never_end_when_sent_then_431_and_the_answers_are_documented(server):
    """One header line after another, as fast as the socket takes them: refused once the
    head passes api.max_header_bytes (64 KiB), the connection closed; the OpenAPI document
    lists 408 and 431 on every operation, as the server answers them on any."""
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    sent = 0
    with server.other_client(), server.peak_rss_growth() as growth:
        with socket.create_connection((LOOPBACK, server.port), timeout=60) as sock:
            sock.sendall(b"GET /people HTTP/1.1\r\nHost: facerec\r\n")
            try:
                while sent < 50 * MB:
                    sock.sendall(line)
                    sent += len(line)
            except OSError:  # the server answered and closed the connection
                pass
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
    print(f"endless headers: {answer[:40]!r} after {sent} bytes, peak RSS +{growth[0] / MB:.1f} MB")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b"headers_too_large" in answer and b"connection: close" in answer.lower()
    assert sent < 10 * MB, sent  # cut off near the limit, plus what the socket buffers held
    assert growth[0] < 30 * MB, f"peak RSS grew {growth[0] / MB:.1f} MB"
    doc = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert {"408", "431"} <= set(operation["responses"]), (method, path)
            assert "headers_too_large" in operation["responses"]["431"]["description"]


async def _slow_clients(port: int, n: int) -> list[tuple[bytes, float]]:
    """``n`` clients that send a request line, then one header byte a second, for ever;
    each one's answer and when its connection was closed (seconds after it opened)."""

    async def one() -> tuple[bytes, float]:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /people HTTP/1.1\r\nHost: facerec\r\nX-Slow: ")
        answer = b""
        try:
            while time.monotonic() - start < HEADER_TIMEOUT_S + 30:
                await writer.drain()
                try:
                    got = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    writer.write(b"a")
                    continue
                if not got:
                    break
                answer += got
        except ConnectionError:
            pass
        finally:
            writer.close()
        return answer, time.monotonic() - start

    return await asyncio.gather(*(one() for _ in range(n)))


def test_given_1000_slow_clients_when_connected_then_others_served_and_memory_bounded(server):
    """Slowloris: 1,000 connections that never finish their headers. Each is closed with a
    408 after api.header_timeout_s; meanwhile another client is served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1500:  # this process holds the 1,000 client sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    with server.other_client() as latencies, server.peak_rss_growth() as growth:
        # a loop of its own in a thread: an earlier test (Playwright) may leave one running
        # in this thread, where asyncio.run refuses to start
        with ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, _slow_clients(server.port, 1000)).result()
    closed_after = sorted(t for _, t in results)
    print(
        f"1000 slow clients: closed after {closed_after[0]:.1f}-{closed_after[-1]:.1f} s, "
        f"other client {max(latencies):.2f} s at most, peak RSS +{growth[0] / MB:.1f} MB"
    )
    refused = [a for a, _ in results if a.startswith(b"HTTP/1.1 408 ")]
    assert len(refused) == 1000, {a[:60] for a, _ in results}
    assert closed_after[-1] < HEADER_TIMEOUT_S + 10, closed_after[-5:]
    assert len(latencies) >= 4
    assert growth[0] < 60 * MB, f"peak RSS grew {growth[0] / MB:.1f} MB"
