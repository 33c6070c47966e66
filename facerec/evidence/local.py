"""Evidence in a local folder: one file per key, written atomically (temp file + rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from facerec.evidence.base import (
    JPEG,
    EvidenceNotFound,
    EvidenceStore,
    check_key,
    check_prefix,
)

_TMP_SUFFIX = ".tmp"


class LocalEvidenceStore(EvidenceStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str = JPEG) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(data))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise EvidenceNotFound(f"no evidence stored under {key!r}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        self._prune(path.parent)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        base = self._folder(check_prefix(prefix, empty=True))
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    continue  # a write in progress (or one that crashed)
                yield name if rel == "." else f"{rel}/{name}"

    def _folder(self, prefix: str) -> Path:
        return self.root.joinpath(*prefix.rstrip("/").split("/")) if prefix else self.root

    def delete_prefix(self, prefix: str) -> int:
        base = self._folder(check_prefix(prefix))  # never '': that would be the root
        keys = list(self.list_keys(prefix))
        shutil.rmtree(base, ignore_errors=True)
        self._prune(base.parent)
        return len(keys)

    def _prune(self, folder: Path) -> None:
        """Remove empty folders up to the root, so erased people leave no trace."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
