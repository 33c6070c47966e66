"""The review web UI (``/ui``): server-rendered pages with a small script, served by the
API app itself and signed in with the same API keys (kept in a cookie)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.ui.routes import STATIC_DIR, Denied, denied, root_router, router


def install(app: FastAPI) -> None:
    """Add the UI's pages, its static files and the ``/`` redirect to ``app``."""
    app.include_router(router)
    app.include_router(root_router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_exception_handler(Denied, denied)


__all__ = ["install"]
