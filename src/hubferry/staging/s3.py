"""Staging on any S3-compatible store (AWS S3, Cloudflare R2, MinIO) behind presigned GET URLs.

Each object carries its expiry as ``x-amz-meta-hubferry-expires`` (Unix time), so cleanup finds
expired files by listing ``<s3_prefix>staging/`` from any machine, with no local record.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)

from hubferry.config import Settings
from hubferry.errors import ConfigError, HubferryError, PermanentError, TransientError, ValidationError
from hubferry.hub import retry
from hubferry.logs import redact, register_secret
from hubferry.staging.base import StagedFile, split_ref, validate_key
from hubferry.staging.retries import classified_call

T = TypeVar("T")
KIND = "s3"
#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600
#: The largest object one PUT may carry.
MAX_PUT_BYTES = 5 * 1024**3
#: Object metadata holding the expiry (sent as ``x-amz-meta-hubferry-expires``).
EXPIRES_META = "hubferry-expires"
_CREDENTIALS_HINT = ("check HUBFERRY_S3_ACCESS_KEY_ID and HUBFERRY_S3_SECRET_ACCESS_KEY, and that they may read, "
                     "write and list the bucket")
_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                         "ExpiredToken", "AuthorizationHeaderMalformed", "403"})
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503"})


def make_client(settings: Settings) -> Any:
    """The one place an S3 client is built, from the ``s3_*`` settings.

    Credentials are ``s3_access_key_id`` with ``s3_secret_access_key``, or, with neither set, boto3's
    own chain (``AWS_*`` variables, ``~/.aws``, an instance role). boto3 itself does not retry:
    :func:`hubferry.hub.retry.call` does, with the project's backoff and attempt counts.

    Raises:
        ConfigError: only one of the two credential settings is set.
    """
    key_id = settings.s3_access_key_id
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    if bool(key_id) != bool(secret):
        missing = "HUBFERRY_S3_SECRET_ACCESS_KEY" if key_id else "HUBFERRY_S3_ACCESS_KEY_ID"
        raise ConfigError(f"{missing} is not set", setting=missing,
                          hint="set both HUBFERRY_S3_ACCESS_KEY_ID and HUBFERRY_S3_SECRET_ACCESS_KEY, or neither")
    register_secret(secret)
    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"total_max_attempts": 1},
        signature_version="s3v4",
        # Custom endpoints (R2, MinIO) are addressed by path: their buckets have no DNS names of their own.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        # CRC trailers on every upload are an AWS novelty that some S3-compatible stores reject.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
        aws_access_key_id=key_id, aws_secret_access_key=secret, config=config,
    )


def classify(exc: BaseException, what: str, url: str) -> HubferryError:
    """A boto3 exception as a hubferry error with the HTTP status, the object URL and a hint."""
    if isinstance(exc, HubferryError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"S3 {what} failed: HTTP {status} {code}: {redact(str(error.get('Message', '')))}".rstrip(": ")
        if code in _AUTH_CODES or status in (401, 403):
            return PermanentError(message, category="authentication", status=status, code=code, url=url,
                                  hint=_CREDENTIALS_HINT)
        if code == "NoSuchBucket":
            return PermanentError(message, status=status, code=code, url=url,
                                  hint="create the bucket or fix HUBFERRY_S3_BUCKET")
        if code in _TRANSIENT_CODES or status in (408, 429) or (status or 0) >= 500:
            category = "rate_limit" if code == "SlowDown" or status == 429 else "service_error"
            return TransientError(message, category=category, status=status, code=code, url=url,
                                  hint="the store is busy or unwell; hubferry retries")
        return PermanentError(message, status=status, code=code, url=url, hint="read the store's message")
    if isinstance(exc, NoCredentialsError):
        return ConfigError(f"S3 {what}: no credentials", category="authentication",
                           setting="HUBFERRY_S3_ACCESS_KEY_ID", url=url,
                           hint="set HUBFERRY_S3_ACCESS_KEY_ID and HUBFERRY_S3_SECRET_ACCESS_KEY")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return TransientError(f"S3 {what} timed out", category="timeout", url=url,
                              hint="the network or the store is slow; hubferry retries (or raise "
                              "HUBFERRY_READ_TIMEOUT)")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | HTTPClientError | ConnectionError):
        return TransientError(f"S3 {what} failed: network error: {type(exc).__name__}", category="network",
                              url=url, hint="check that HUBFERRY_S3_ENDPOINT_URL is reachable")
    return PermanentError(f"S3 {what} failed: {type(exc).__name__}: {redact(str(exc))[:300]}", url=url,
                          hint="report this with the log")


class S3Staging:
    """Objects under ``<s3_prefix>staging/`` of ``s3_bucket``, fetched with presigned GET URLs."""

    kind = KIND

    def __init__(self, settings: Settings, *, client: Any = None, clock: Callable[[], float] = time.time) -> None:
        if not settings.s3_bucket:
            raise ConfigError("the s3 staging needs a bucket: HUBFERRY_S3_BUCKET is not set",
                              setting="HUBFERRY_S3_BUCKET", hint="set HUBFERRY_S3_BUCKET (and HUBFERRY_S3_ENDPOINT_URL "
                              "for R2 or MinIO)")
        if settings.staging_ttl_s > MAX_PRESIGN_S:
            raise ConfigError(f"HUBFERRY_STAGING_TTL_S is over {MAX_PRESIGN_S} s, the longest an S3 presigned URL "
                              "may live", setting="HUBFERRY_STAGING_TTL_S", hint=f"set it to {MAX_PRESIGN_S} or less")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix + "staging/"
        self.ttl_s = settings.staging_ttl_s
        self.policy = retry.RetryPolicy.from_settings(settings)
        self.clock = clock
        self._client = client if client is not None else make_client(settings)
        self.endpoint = str(self._client.meta.endpoint_url).rstrip("/")

    def stage(self, path: Path, *, key: str, token: str | None = None) -> StagedFile:
        key = validate_key(key)
        size = path.stat().st_size
        if size > MAX_PUT_BYTES:
            raise ValidationError(f"{path.name} is {size} bytes; S3 staging takes at most {MAX_PUT_BYTES}",
                                  field="path", hint="make the dataset smaller")
        obj = self.prefix + key
        expires = int(self.clock()) + self.ttl_s

        def put() -> None:
            with path.open("rb") as body:  # opened per attempt: a retry re-sends from the start
                self._client.put_object(
                    Bucket=self.bucket, Key=obj, Body=body, ContentLength=size,
                    ContentType=mimetypes.guess_type(key)[0] or "application/octet-stream",
                    Metadata={EXPIRES_META: str(expires)},
                )

        self._call("upload", obj, put)
        url = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": obj}, ExpiresIn=self.ttl_s)
        return StagedFile(url=url, expires_at=datetime.fromtimestamp(expires, UTC), ref=f"{KIND}:{self.bucket}/{obj}")

    def delete(self, ref: str, *, token: str | None = None) -> None:
        bucket, obj = self._parse(ref)
        try:
            self._call("delete", obj, lambda: self._client.delete_object(Bucket=bucket, Key=obj), bucket=bucket)
        except PermanentError as exc:
            if exc.context.get("code") != "NoSuchBucket":
                raise

    def expired(self, now: float | None = None) -> list[str]:
        moment = self.clock() if now is None else now
        refs = []
        for obj in self._list():
            expires = self._expiry(obj)
            if expires is not None and expires < moment:
                refs.append(f"{KIND}:{self.bucket}/{obj}")
        return refs

    def _list(self) -> list[str]:
        keys: list[str] = []
        token = ""

        def page() -> dict[str, Any]:
            more = {"ContinuationToken": token} if token else {}
            return dict(self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, **more))

        while True:
            listed = self._call("list", self.prefix, page)
            keys += [item["Key"] for item in listed.get("Contents", [])]
            token = listed.get("NextContinuationToken") or ""
            if not listed.get("IsTruncated") or not token:
                return keys

    def _expiry(self, obj: str) -> float | None:
        """The object's recorded expiry; None for an object hubferry did not stage or that is gone."""
        try:
            head = self._call("read metadata", obj, lambda: self._client.head_object(Bucket=self.bucket, Key=obj))
        except PermanentError as exc:
            if exc.context.get("status") == 404:
                return None
            raise
        try:
            return float(head.get("Metadata", {})[EXPIRES_META])
        except (KeyError, ValueError):
            return None

    def _parse(self, ref: str) -> tuple[str, str]:
        backend, ident = split_ref(ref)
        bucket, _, obj = ident.partition("/")
        _, folder, key = obj.partition("staging/")
        if backend != KIND or not bucket or not folder:
            raise ValidationError(f"not an S3 staging reference: {ref[:80]!r}", field="ref",
                                  hint="pass the ref of a file staged on S3 unchanged")
        validate_key(key)  # only ever delete under a staging/ folder, never '..'
        return bucket, obj

    def _call(self, what: str, obj: str, fn: Callable[[], T], *, bucket: str | None = None) -> T:
        url = f"{self.endpoint}/{bucket or self.bucket}/{obj}"
        return classified_call(fn, classify=lambda exc: classify(exc, what, url), what=f"S3 {what}",
                               endpoint=self.endpoint, policy=self.policy)
