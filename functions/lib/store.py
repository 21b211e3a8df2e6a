"""The object store: one small interface over `s3://BUCKET[/prefix]` (boto3) and `file:///dir`.

Writes are whole objects: a reader sees the old object or the new one, never a part of either.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from functions.lib.errors import ConfigError, NotFound, Unavailable

log = logging.getLogger("dandelion")


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str = "") -> Iterator[str]: ...
    def url(self, key: str) -> str: ...


def open_store(url: str) -> ObjectStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3Store(parsed.netloc, parsed.path.strip("/"))
    raise ConfigError(f"DANDELION_STORE_URL must be s3://BUCKET[/prefix] or file:///dir, got {url!r}")


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class FileStore:
    """A directory; a write goes to a temporary file that is renamed over the key when complete."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {key!r}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Idempotent, as S3's DELETE is."""
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        top = self.root / prefix.rpartition("/")[0]  # only the folder the prefix names, not the whole store
        if not top.is_dir():
            return
        for path in sorted(top.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".tmp-") and key.startswith(prefix):
                yield key

    def url(self, key: str) -> str:
        return self._path(key).as_uri()


class S3Store:
    """A bucket (and optional key prefix) through boto3; endpoint and credentials from the AWS variables."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        # Bounded: a store that stops answering (frozen, partitioned away) fails a call in about 20 s
        # (three attempts of at most 2 s to connect and 5 s to answer each read, with backoff) instead of
        # botocore's default of 60 s per read, five times over; the function answers 503 with Retry-After
        # and its client retries. The pool fits extract-images' parallel ingestions and training's eight
        # loader threads without queueing.
        self.client = boto3.client(
            "s3",
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=2,
                read_timeout=5,
                max_pool_connections=32,
            ),
        )

    def _call(self, operation: str, key: str, **kwargs: object) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(
                Bucket=self.bucket, Key=self.prefix + _check_key(key), **kwargs
            )
        except ClientError as exc:
            # HEAD answers a bare 404 (it has no body to name the error); GET names it NoSuchKey.
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"no object {key!r}") from None
            log.warning("the object store refused %s of %r: %s", operation, key, exc)
            raise Unavailable(f"the object store refused {operation}") from exc
        except BotoCoreError as exc:
            log.warning("the object store is unavailable: %s", exc)  # its endpoint: for the log only
            raise Unavailable("the object store is unavailable") from exc

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        # A single PUT is atomic in S3; the checksum makes the server refuse a corrupted upload.
        self._call(
            "put_object",
            key,
            Body=data,
            ContentType=content_type,
            ChecksumAlgorithm="SHA256",
        )

    def get(self, key: str) -> bytes:
        return self._call("get_object", key)["Body"].read()

    def delete(self, key: str) -> None:
        self._call("delete_object", key)

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key)
        except NotFound:
            return False
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"
