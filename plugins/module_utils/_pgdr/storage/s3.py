# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 and S3-compatible repositories, through boto3.

Every PUT carries the object's SHA-256 (ChecksumSHA256, so the server rejects
a body damaged in transit, or Content-MD5 when request checksums are limited
to when_required) and an ``x-amz-meta-sha256`` header: every GET returns it
and the bytes read are verified against it (base.Storage.get).

Every request, the reading of a response body included, is retried here (not
by botocore, which does not retry body reads): on 5xx, SlowDown, resets, cut
bodies and timeouts, with exponential backoff and jitter, at most
s3_max_attempts times and RETRY_SECONDS in all, one event line per retry. A
write whose outcome is unknown is sent again; for if_absent, an "already
exists" answer is then settled by the stored SHA-256: ours is a success.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import http.client
import os
import random
import socket
import threading
import time

from ..errors import Conflict, IntegrityError, NotFound, PgdrError, RepositoryError
from .base import ObjectInfo, Storage, file_sha256
from ..parallel import run_all

MIB = 1024 * 1024
RETRY_SECONDS = 300.0  # bound on one request's retries, whatever s3_max_attempts says
BACKOFF_FIRST = 0.2    # seconds before the first retry; doubled each time, with jitter
BACKOFF_MAX = 20.0
_TRANSIENT_CODES = ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                    "Throttling", "ThrottlingException", "RequestLimitExceeded",
                    "TooManyRequests", "ConditionalRequestConflict", "OperationAborted")
_EXISTS_CODES = ("PreconditionFailed", "412")
# Storage classes whose objects cannot be read before a RestoreObject completes.
THAW_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
_ACCESS_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "InvalidToken", "ExpiredToken", "403")


def _boto():
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise RepositoryError("repo_type=s3 needs the Python packages boto3 and "
                              "botocore (pip install boto3)", code="dependency_missing",
                              stage="config")
    return boto3, botocore


def aws_session(settings):
    """A boto3 session with the repository's credentials (keys, else a profile, else
    boto3's own chain: environment, instance role); the EBS snapshot provider uses it
    too."""
    boto3, botocore = _boto()
    s = settings
    kwargs = {}
    if s.s3_access_key or s.s3_secret_key:
        if not (s.s3_access_key and s.s3_secret_key):
            raise RepositoryError("s3_access_key and s3_secret_key go together: "
                                  "only one of them is set", code="config_invalid",
                                  stage="config")
        kwargs = dict(aws_access_key_id=s.s3_access_key,
                      aws_secret_access_key=s.s3_secret_key,
                      aws_session_token=s.s3_session_token)
    elif s.s3_profile:
        kwargs = dict(profile_name=s.s3_profile)
    try:
        return boto3.session.Session(**kwargs)
    except botocore.exceptions.ProfileNotFound:
        raise RepositoryError("s3_profile=%r is not a profile in the AWS config"
                              % s.s3_profile, code="config_invalid", stage="config")


class S3Storage(Storage):
    def __init__(self, settings):
        settings.require("s3_bucket")
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.prefix = settings.repo_prefix.strip("/")
        self._local = threading.local()
        self._tls_port = None  # whether an http:// endpoint's port speaks TLS (once known)
        self._boto3, self._botocore = _boto()
        self._session = aws_session(settings)

    # -- connection ------------------------------------------------------------------
    def _client(self, botocore_retries=False):
        s = self.settings
        # the storage's own requests make one attempt each: _retry() retries them, body
        # reads included; the public `client` (bucket settings) keeps botocore's retries
        retries = ({"max_attempts": s.s3_max_attempts, "mode": "standard"}
                   if botocore_retries else {"total_max_attempts": 1, "mode": "standard"})
        config = self._botocore.config.Config(
            region_name=s.s3_region,
            retries=retries,
            s3={"addressing_style": s.s3_addressing},
            max_pool_connections=max(10, 2 * (s.workers or 1) + 2),
            connect_timeout=10, read_timeout=120,
            request_checksum_calculation=s.s3_request_checksum,
            response_checksum_validation="when_required")
        verify = s.s3_ca_bundle or s.s3_verify_tls
        return self._session.client("s3", endpoint_url=s.s3_endpoint or None,
                                    verify=verify, config=config)

    @property
    def _raw(self):
        """The client of the storage's own requests: one per thread (boto3 clients are
        thread-safe, but sharing one serialises on its connection pool), no retries of
        its own."""
        client = getattr(self._local, "raw", None)
        if client is None:
            client = self._local.raw = self._client()
        return client

    @property
    def client(self):
        """A client with botocore's standard retries, for direct calls (bucket settings)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client(botocore_retries=True)
        return client

    def describe(self):
        where = "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://%s" % self.bucket
        if self.settings.s3_endpoint:
            where += " at %s" % self.settings.s3_endpoint
        return where

    def check(self):
        """A HEAD of the bucket: a wrong port or host fails in seconds (two attempts to
        connect), while a server that answers 5xx gets the usual retries."""
        self._retry("check", None, lambda: self._raw.head_bucket(Bucket=self.bucket),
                    connect_attempts=2)

    # -- retries ---------------------------------------------------------------------
    def _retry(self, action, key, once, connect_attempts=None):
        """once() until it succeeds, a permanent error, or the attempts or time run out
        (connect_attempts: fewer attempts when the endpoint cannot be connected to)."""
        attempts = max(1, self.settings.s3_max_attempts or 1)
        unreachable = (self._botocore.exceptions.EndpointConnectionError,
                       self._botocore.exceptions.ConnectTimeoutError)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return once()
            except Exception as exc:
                reason = self._transient(exc)
                if reason is None:
                    raise self._translate(exc, action, key)
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                elapsed = time.monotonic() - started
                limit = attempts
                if connect_attempts and isinstance(exc, unreachable):
                    limit = min(attempts, connect_attempts)
                if attempt >= limit or elapsed + delay > RETRY_SECONDS:
                    error = self._translate(exc, action, key)
                    raise type(error)("%s (gave up after %d attempts in %.0f s)"
                                      % (error.msg, attempt, elapsed),
                                      code=error.code, stage=error.stage, **error.details)
                self._event("S3 %s of %s: %s; retry %d/%d in %.1f s"
                            % (action, key or self.bucket, reason, attempt, attempts - 1,
                               delay))
                time.sleep(delay)

    def _transient(self, exc):
        """A short reason when exc is worth another attempt, else None."""
        exceptions = self._botocore.exceptions
        if isinstance(exc, _Transient):
            return str(exc)
        if isinstance(exc, exceptions.SSLError) or self._wrong_scheme(exc):
            return None
        if isinstance(exc, exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _TRANSIENT_CODES or status in (408, 429, 500, 502, 503, 504):
                return "%s %s" % (status, code)
            return None
        if isinstance(exc, (exceptions.HTTPClientError, exceptions.ConnectionError,
                            exceptions.IncompleteReadError, socket.timeout,
                            ConnectionError, http.client.HTTPException)):
            return "%s: %s" % (type(exc).__name__, _short(exc))
        urllib3 = _urllib3_exceptions()
        if urllib3 is not None and isinstance(exc, urllib3):
            return "%s: %s" % (type(exc).__name__, _short(exc))
        return None

    def _wrong_scheme(self, exc):
        """An http:// endpoint that is an HTTPS port answers a bare 400 (no S3 error
        code); an https:// endpoint that is a plain HTTP port fails the TLS handshake."""
        endpoint = self.settings.s3_endpoint or ""
        exceptions = self._botocore.exceptions
        if endpoint.startswith("http://") and isinstance(exc, exceptions.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status != 400 or str(error.get("Code", "")) not in ("400", "BadRequest", ""):
                return False  # an S3 error with its own code is a real answer
            if self._tls_port is None:  # a bare 400: does that port speak TLS?
                self._tls_port = _speaks_tls(endpoint)
            return self._tls_port
        if endpoint.startswith("https://") and isinstance(exc, exceptions.SSLError):
            text = str(exc).lower()
            return any(hint in text for hint in ("wrong version", "wrong_version",
                                                 "record layer", "packet length",
                                                 "unknown protocol", "http request"))
        return False

    # -- errors ----------------------------------------------------------------------
    def _translate(self, exc, action, key):
        exceptions = self._botocore.exceptions
        where = self.describe()
        if self._wrong_scheme(exc):
            endpoint = self.settings.s3_endpoint
            if endpoint.startswith("http://"):
                hint = ("the endpoint %s answered like an HTTPS server: use https://%s "
                        "(or point it at the plain HTTP port)"
                        % (endpoint, endpoint[len("http://"):]))
            else:
                hint = ("the endpoint %s answered like a plain HTTP server: use http://%s "
                        "(or point it at the HTTPS port)"
                        % (endpoint, endpoint[len("https://"):]))
            return RepositoryError(hint, code="endpoint_wrong_scheme", stage="connect")
        if isinstance(exc, exceptions.SSLError):
            return RepositoryError("TLS with the S3 endpoint %s failed: %s (s3_ca_bundle, "
                                   "s3_verify_tls)" % (self.settings.s3_endpoint, exc),
                                   code="tls_failed", stage="connect")
        if isinstance(exc, (exceptions.EndpointConnectionError,
                            exceptions.ConnectTimeoutError)):
            return RepositoryError("cannot connect to the S3 endpoint %s: %s"
                                   % (self.settings.s3_endpoint or "(AWS default)", exc),
                                   code="endpoint_unreachable", stage="connect")
        if isinstance(exc, exceptions.NoCredentialsError):
            return RepositoryError("no S3 credentials: set s3_access_key/s3_secret_key, "
                                   "s3_profile, the AWS_* environment, or use an instance "
                                   "role", code="credentials_missing", stage="connect")
        if isinstance(exc, exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (action == "check" and status == 404):
                return RepositoryError("bucket %r does not exist (%s)" % (self.bucket, where),
                                       code="bucket_not_found", stage="connect")
            if code in _ACCESS_CODES or status == 403:
                return RepositoryError("access to %s denied (%s): check s3_access_key, "
                                       "s3_secret_key and the bucket policy"
                                       % (where, code or status),
                                       code="access_denied", stage="connect")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound("object %s not found in %s" % (key, where),
                                code="object_not_found", key=key)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return Conflict("object %s already exists in %s and is never overwritten"
                                % (key, where), code="object_exists", key=key)
            if code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
                return RepositoryError("the server rejected %s: its checksum did not "
                                       "match the data sent (%s)" % (key, code),
                                       code="upload_corrupted")
            return RepositoryError("S3 %s of %s failed: %s %s"
                                   % (action, key or "bucket " + self.bucket, code,
                                      error.get("Message", "")),
                                   code="s3_error")
        if isinstance(exc, PgdrError):
            return exc
        return RepositoryError("S3 %s of %s failed: %s"
                               % (action, key or "bucket " + self.bucket, _short(exc)),
                               code="s3_error")

    def _key(self, key):
        return "%s/%s" % (self.prefix, key) if self.prefix else key

    def _unkey(self, full):
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- objects ---------------------------------------------------------------------
    def put(self, key, data, sha256=None, if_absent=False):
        sha256 = (sha256 or hashlib.sha256(data).hexdigest()).lower()
        args = dict(Bucket=self.bucket, Key=self._key(key), Body=data,
                    Metadata={"sha256": sha256})
        if self.settings.s3_request_checksum == "when_required":
            args["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        else:
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        if if_absent:
            args["IfNoneMatch"] = "*"

        tries = []

        def once():
            tries.append(1)
            if if_absent and self._settled(key, sha256):
                # A HEAD first, because not every S3-compatible server honours
                # If-None-Match; after a failed attempt it also finds our own write.
                return len(tries) > 1
            try:
                self._raw.put_object(**args)
            except self._botocore.exceptions.ClientError as exc:
                if if_absent and _error_code(exc) in _EXISTS_CODES:
                    if not self._settled(key, sha256):
                        raise _Transient("412 but the object is gone")
                    return len(tries) > 1
                raise
            return True
        return self._retry("put", key, once)

    def _settled(self, key, sha256):
        """For an if_absent write: False when key is absent; True when it holds our
        bytes (an earlier attempt whose answer was lost stored them); else Conflict."""
        info = self.head(key)
        if info is None:
            return False
        if info.sha256 and info.sha256.lower() == sha256:
            return True
        raise Conflict("object %s already exists in %s with other content (SHA-256 %s..., "
                       "ours %s...) and is never overwritten"
                       % (key, self.describe(), (info.sha256 or "unknown")[:12],
                          sha256[:12]), code="object_exists", key=key)

    def put_file(self, key, path, sha256=None, if_absent=False):
        part = self.settings.s3_part_size * MIB
        try:
            size = os.path.getsize(path)
            if size <= part:
                with open(path, "rb") as handle:
                    data = handle.read()
        except OSError as exc:
            raise RepositoryError("cannot read %s: %s" % (path, exc), code="read_failed")
        if size <= part:
            digest = hashlib.sha256(data).hexdigest()
            if sha256 and sha256.lower() != digest:
                raise IntegrityError("%s changed while it was uploaded (SHA-256 %s..., "
                                     "%s... expected)" % (path, digest[:12], sha256[:12]),
                                     code="src_changed", key=key)
            return self.put(key, data, sha256=digest, if_absent=if_absent)
        sha256 = (sha256 or file_sha256(path)).lower()
        if if_absent and self._settled(key, sha256):
            return False
        self._multipart(key, path, size, part, sha256)
        return True

    def _multipart(self, key, path, size, part, sha256):
        """A multipart upload whose every request is retried; the completion, when its
        answer is lost, is settled by the stored SHA-256."""
        crc = self.settings.s3_request_checksum != "when_required"
        create = dict(Bucket=self.bucket, Key=self._key(key), Metadata={"sha256": sha256})
        if crc:
            create["ChecksumAlgorithm"] = "CRC32"
        upload_id = self._retry("put", key,
                                lambda: self._raw.create_multipart_upload(**create)
                                ["UploadId"])
        try:
            def send(number):
                with open(path, "rb") as handle:
                    handle.seek((number - 1) * part)
                    data = handle.read(part)
                args = dict(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id,
                            PartNumber=number, Body=data)
                if crc:
                    args["ChecksumAlgorithm"] = "CRC32"
                else:
                    args["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
                answer = self._retry("put", "%s (part %d)" % (key, number),
                                     lambda: self._raw.upload_part(**args))
                done = {"PartNumber": number, "ETag": answer["ETag"]}
                if answer.get("ChecksumCRC32"):
                    done["ChecksumCRC32"] = answer["ChecksumCRC32"]
                return done

            numbers = list(range(1, (size + part - 1) // part + 1))
            parts = run_all(send, numbers, max(1, min(self.settings.workers or 1, 4)))

            def complete():
                try:
                    self._raw.complete_multipart_upload(
                        Bucket=self.bucket, Key=self._key(key), UploadId=upload_id,
                        MultipartUpload={"Parts": parts})
                except self._botocore.exceptions.ClientError as exc:
                    info = self.head(key) if _error_code(exc) == "NoSuchUpload" else None
                    if info is None or (info.sha256 or "").lower() != sha256:
                        raise
                    # an earlier completion whose answer was lost: the object is ours
            self._retry("put", key, complete)
        except Exception:
            try:
                self._raw.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key),
                                                 UploadId=upload_id)
            except Exception:  # the upload's parts expire with the bucket's lifecycle
                pass
            raise

    def _fetch(self, key):
        def once():
            answer = self._raw.get_object(Bucket=self.bucket, Key=self._key(key))
            body = answer["Body"]
            try:
                data = body.read()
            finally:
                body.close()
            length = answer.get("ContentLength")
            if length is not None and len(data) != length:
                raise _Transient("body cut after %d of %d bytes" % (len(data), length))
            return data, answer.get("Metadata", {}).get("sha256")
        return self._retry("get", key, once)

    def head(self, key):
        def once():
            try:
                answer = self._raw.head_object(Bucket=self.bucket, Key=self._key(key))
            except self._botocore.exceptions.ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise
            return ObjectInfo(key, answer["ContentLength"],
                              answer.get("Metadata", {}).get("sha256"),
                              mtime=_epoch(answer.get("LastModified")))
        return self._retry("head", key, once)

    def _pages(self, prefix, **extra):
        """list_objects_v2 page by page, each page retried on its own."""
        args = dict(Bucket=self.bucket, Prefix=self._key(prefix), **extra)
        while True:
            page = self._retry("list", prefix,
                               lambda: self._raw.list_objects_v2(**args))
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            args["ContinuationToken"] = token

    def list(self, prefix):
        found = []
        for page in self._pages(prefix):
            for item in page.get("Contents", ()):
                found.append(ObjectInfo(self._unkey(item["Key"]), item["Size"],
                                        mtime=_epoch(item.get("LastModified"))))
        return sorted(found, key=lambda info: info.key)

    def archived_objects(self, prefix):
        found = {}
        for page in self._pages(prefix):
            for item in page.get("Contents", ()):
                if item.get("StorageClass") in THAW_CLASSES:
                    found[self._unkey(item["Key"])] = item["StorageClass"]
        return found

    def request_thaw(self, key, days, tier):
        """RestoreObject once; then True when the temporary copy is readable."""
        head = self._retry("head", key, lambda: self._raw.head_object(
            Bucket=self.bucket, Key=self._key(key)))
        state = head.get("Restore") or ""
        if 'ongoing-request="false"' in state:
            return True
        if 'ongoing-request="true"' in state:
            return False

        def thaw():
            try:
                self._raw.restore_object(Bucket=self.bucket, Key=self._key(key),
                                         RestoreRequest={"Days": days,
                                                         "GlacierJobParameters":
                                                         {"Tier": tier}})
            except self._botocore.exceptions.ClientError as exc:
                if _error_code(exc) != "RestoreAlreadyInProgress":
                    raise
        self._retry("thaw", key, thaw)
        return False

    def list_dirs(self, prefix):
        names = []
        for page in self._pages(prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                names.append(self._unkey(common["Prefix"])[len(prefix):].rstrip("/"))
        return sorted(names)

    def delete(self, keys):
        keys = list(keys)
        for start in range(0, len(keys), 1000):  # the API's batch limit
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            answer = self._retry("delete", batch[0]["Key"],
                                 lambda: self._raw.delete_objects(
                                     Bucket=self.bucket,
                                     Delete={"Objects": batch, "Quiet": True}))
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RepositoryError("cannot delete %s: %s %s" % (
                    first.get("Key"), first.get("Code"), first.get("Message")),
                    code="delete_failed")


class _Transient(Exception):
    """A fault worth another attempt that botocore does not raise itself (a cut body)."""


def _error_code(exc):
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _short(exc):
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _speaks_tls(endpoint):
    """True when the host:port of an http:// endpoint completes a TLS handshake."""
    import ssl
    from urllib.parse import urlsplit
    parts = urlsplit(endpoint)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=parts.hostname):
                return True
    except (OSError, ValueError):
        return False


def _urllib3_exceptions():
    """The urllib3 errors a body read can raise (a tuple), or None without urllib3."""
    try:
        import urllib3.exceptions
    except ImportError:
        return None
    return (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
            urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.NewConnectionError)


def _epoch(moment):
    return moment.timestamp() if moment is not None else None
