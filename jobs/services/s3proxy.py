"""S3Proxy on one machine: an S3-compatible server (Apache-2.0) from the executable jar
``make setup`` put in ``.jvm/s3proxy`` (``org.gaul.s3proxy.Main``, the release's own
jar-with-dependencies from Maven Central), serving the S3 API on a loopback port with its
objects in its work folder (the ``filesystem`` provider: one file per object). The evidence
store's S3 backend is tested against it, and it can hold evidence on a one-machine install.

    with S3ProxyServer() as s3:
        store = S3EvidenceStore(bucket="b", create_bucket=True, **s3.client_options())

Requests must be signed (AWS Signature V2 or V4) with ``access_key`` / ``secret_key``, as a
real S3 service would require.
"""

from __future__ import annotations

import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path

from jobs.services.process import (
    LOOPBACK,
    ServiceError,
    ServiceProcess,
    free_port,
    java17,
    port_open,
)
from jobs.services.versions import jvm_set, versions


class S3ProxyServer(ServiceProcess):
    """One S3Proxy; ``endpoint_url`` is where S3 clients connect."""

    name = "s3proxy"
    startup_timeout_s = 90.0
    stop_timeout_s = 15.0

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        access_key: str = "facerec",
        secret_key: str | None = None,
        heap_mb: int = 256,
        startup_timeout_s: float | None = None,
    ) -> None:
        super().__init__(workdir, startup_timeout_s)
        self.port = port
        self._port_fixed = port is not None
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.heap_mb = heap_mb
        self.jars = jvm_set("s3proxy")

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise ServiceError("S3Proxy has no port yet: start() it first")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        """One folder per bucket, one file per object."""
        return self.workdir / "data"

    def client_options(self) -> dict[str, str]:
        """Keyword arguments of ``S3EvidenceStore`` (and the evidence.s3 settings)."""
        return {
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }

    def jar(self) -> Path:
        jar = self.jars / f"s3proxy-{versions()['S3PROXY_VERSION']}-jar-with-dependencies.jar"
        if not jar.is_file():
            raise ServiceError(
                f"{jar.name} not found in {self.jars}: run `make setup` (or `make jvm`)"
            )
        return jar

    # ------------------------------------------------------------------ ServiceProcess
    def configure(self) -> None:
        self.jar()
        if not self._port_fixed:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "s3proxy.endpoint": self.endpoint_url,
            "s3proxy.authorization": "aws-v2-or-v4",
            "s3proxy.identity": self.access_key,
            "s3proxy.credential": self.secret_key,
            "s3proxy.jetty.max-threads": "16",
            "jclouds.provider": "filesystem",
            "jclouds.identity": self.access_key,
            "jclouds.credential": self.secret_key,
            "jclouds.filesystem.basedir": str(self.data_dir),
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        path = self.workdir / "s3proxy.conf"
        path.write_text(text)
        path.chmod(0o600)  # it holds the secret key

    def launch(self) -> None:
        argv = [
            java17(),
            f"-Xmx{self.heap_mb}m",
            "-XX:+ExitOnOutOfMemoryError",
            # the client compiler and the serial collector: a quicker start on two busy cores
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            "-cp",
            str(self.jar()),
            "org.gaul.s3proxy.Main",
            "--properties",
            str(self.workdir / "s3proxy.conf"),
        ]
        # the jar's logback.xml reads LOG_LEVEL: warnings and errors only
        self.popen(argv, env={**os.environ, "LOG_LEVEL": "warn"})

    def probe(self) -> bool:
        """Ready when an anonymous request gets S3's own refusal (403 AccessDenied): the
        server is up and checking signatures."""
        if self.port is None or not port_open(LOOPBACK, self.port):
            return False
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=3):  # noqa: S310
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 403 and b"AccessDenied" in exc.read()
