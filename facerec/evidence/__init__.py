"""Face evidence storage: template crops and sighting crops/frames as JPEG.

``open_evidence_store(settings)`` picks the backend from ``settings.evidence.backend``: a
local folder (``evidence.dir``, default ``<data_dir>/evidence``) or an S3-compatible bucket
(``evidence.s3``). Every backend passes the same contract tests
(tests/test_evidence_store.py). JPEG encoding is ``udfs.image.encode_jpeg`` (with
``settings.evidence.jpeg_quality``): this layer stores bytes and knows no images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facerec.evidence.base import (
    JPEG,
    SIGHTINGS_PREFIX,
    TEMPLATES_PREFIX,
    EvidenceNotFound,
    EvidenceStore,
    InvalidEvidenceKey,
    check_key,
    check_prefix,
    frame_key_of,
    person_prefix,
    sighting_key,
    template_key,
)

if TYPE_CHECKING:
    from facerec.config import Settings

__all__ = [
    "JPEG",
    "SIGHTINGS_PREFIX",
    "TEMPLATES_PREFIX",
    "EvidenceNotFound",
    "EvidenceStore",
    "InvalidEvidenceKey",
    "check_key",
    "check_prefix",
    "frame_key_of",
    "open_evidence_store",
    "person_prefix",
    "sighting_key",
    "template_key",
]


def open_evidence_store(settings: Settings) -> EvidenceStore:
    cfg = settings.evidence
    if cfg.backend == "local":
        from facerec.evidence.local import LocalEvidenceStore

        return LocalEvidenceStore(settings.evidence_path())
    if cfg.backend == "s3":
        from facerec.evidence.s3 import S3EvidenceStore

        s3 = cfg.s3
        return S3EvidenceStore(
            bucket=s3.bucket,
            endpoint_url=s3.endpoint_url,
            access_key=s3.access_key.get_secret_value() if s3.access_key else None,
            secret_key=s3.secret_key.get_secret_value() if s3.secret_key else None,
            region=s3.region,
            prefix=s3.prefix,
            create_bucket=s3.create_bucket,
        )
    raise ValueError(f"evidence.backend {cfg.backend!r}: expected 'local' or 's3'")
