"""Evidence in an S3-compatible bucket (AWS S3, S3Proxy, Ceph RGW, Garage, ...) via boto3.

A PUT is atomic in S3: readers see the old object or the new one, never a part. Keys are
stored under ``prefix`` inside the bucket, so several deployments can share one bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from facerec.evidence.base import (
    JPEG,
    EvidenceNotFound,
    EvidenceStore,
    check_key,
    check_prefix,
)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # DeleteObjects' limit


class S3EvidenceStore(EvidenceStore):
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        prefix: str = "",
        create_bucket: bool = False,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = check_prefix(prefix, empty=True)
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        self._s3 = client
        if create_bucket:
            self.ensure_bucket()

    def describe(self) -> str:
        where = self.endpoint_url or "AWS S3"
        return f"s3://{self.bucket}/{self.prefix} at {where}"

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"}:
                raise
            self._s3.create_bucket(Bucket=self.bucket)

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str = JPEG) -> None:
        self._s3.put_object(
            Bucket=self.bucket, Key=self._full(key), Body=bytes(data), ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise EvidenceNotFound(f"no evidence stored under {key!r}") from None
            raise
        body = obj["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._full(key))

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix, empty=True)
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix) :]

    def _delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": self._full(k)} for k in keys[i : i + _DELETE_BATCH]]
            reply = self._s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(
                    f"S3 refused to delete {len(errors)} evidence object(s), e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def close(self) -> None:
        self._s3.close()


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
