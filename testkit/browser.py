"""Driving the review UI in a real browser: Debian's chromium through Playwright (its own
browser download is not used), and an app served by uvicorn on a loopback port in a thread
of the test process, so that a test can write to the app's stores and watch the page.

    with chromium() as browser, AppServer(create_app(settings, engine=engine)) as server:
        page = signed_in(browser, server.url, api_key)
        page.goto("/ui/sightings")

A session keeps one browser (starting chromium costs seconds) and a context per test
(cookies apart). Playwright's sync API runs an event loop in the thread that starts it:
``asyncio.run`` in that thread fails until the browser is closed.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Playwright

LOOPBACK = "127.0.0.1"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")
"""No sandbox: it needs user namespaces, which containers (and root) often lack."""


def chromium_path() -> str | None:
    """Debian's chromium (``make system-packages``), or the one ``FACEREC_CHROMIUM`` names."""
    return os.environ.get("FACEREC_CHROMIUM") or shutil.which("chromium")


def launch_chromium(playwright: Playwright, **options: Any) -> Browser:
    path = chromium_path()
    if path is None:
        raise FileNotFoundError(
            "chromium not found: `make system-packages` installs Debian's (as root), or set "
            "FACEREC_CHROMIUM"
        )
    return playwright.chromium.launch(
        executable_path=path, headless=True, args=list(CHROMIUM_ARGS), **options
    )


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium, closed (and Playwright stopped) on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


class AppServer:
    """An ASGI app served by uvicorn on a free loopback port, in a daemon thread; its
    lifespan runs (start-up and shutdown) as under ``facerec api``. The socket is bound
    before the thread starts, so the port cannot be taken in between."""

    def __init__(self, app: Any, host: str = LOOPBACK) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="uvicorn", daemon=True
        )

    def start(self, timeout_s: float = 60.0) -> Self:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"uvicorn stopped before serving {self.url} (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"uvicorn not serving {self.url} after {timeout_s:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def signed_in(browser: Browser, base_url: str, key: str, **context: Any) -> Page:
    """A page in a new context (cookies of its own) signed in with ``key`` through the
    login form, as a person would."""
    page = browser.new_context(base_url=base_url, **context).new_page()
    page.goto("/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/ui/login" not in url)
    return page


def image_loaded(img: Locator, timeout_ms: float = 10_000) -> bool:
    """The <img> finished loading a decodable image (not a broken-image icon)."""
    img.scroll_into_view_if_needed()  # lazy images load near the viewport only
    img.page.wait_for_function(
        "img => img.complete", arg=img.element_handle(), timeout=timeout_ms
    )
    return bool(img.evaluate("img => img.naturalWidth > 0"))


__all__ = [
    "CHROMIUM_ARGS",
    "AppServer",
    "chromium",
    "chromium_path",
    "image_loaded",
    "launch_chromium",
    "signed_in",
]
