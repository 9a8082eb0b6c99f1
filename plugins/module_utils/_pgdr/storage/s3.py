# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 and S3-compatible repositories, through boto3.

Every PUT carries the object's SHA-256 (ChecksumSHA256, so the server rejects
a body damaged in transit, or Content-MD5 when request checksums are limited
to when_required) and an ``x-amz-meta-sha256`` header, so that a later run
can tell an identical object without downloading it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import threading

from ..errors import Conflict, NotFound, RepositoryError
from .base import ObjectInfo, Storage, file_sha256

MIB = 1024 * 1024
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


class S3Storage(Storage):
    def __init__(self, settings):
        settings.require("s3_bucket")
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.prefix = settings.repo_prefix.strip("/")
        self._local = threading.local()
        self._boto3, self._botocore = _boto()
        self._session = self._make_session()

    # -- connection ------------------------------------------------------------------
    def _make_session(self):
        s = self.settings
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
            return self._boto3.session.Session(**kwargs)
        except self._botocore.exceptions.ProfileNotFound:
            raise RepositoryError("s3_profile=%r is not a profile in the AWS config"
                                  % s.s3_profile, code="config_invalid", stage="config")

    def _client(self, max_attempts=None):
        s = self.settings
        config = self._botocore.config.Config(
            region_name=s.s3_region,
            retries={"max_attempts": max_attempts or s.s3_max_attempts, "mode": "standard"},
            s3={"addressing_style": s.s3_addressing},
            max_pool_connections=max(10, 2 * (s.workers or 1) + 2),
            connect_timeout=10, read_timeout=120,
            request_checksum_calculation=s.s3_request_checksum,
            response_checksum_validation="when_required")
        verify = s.s3_ca_bundle or s.s3_verify_tls
        return self._session.client("s3", endpoint_url=s.s3_endpoint or None,
                                    verify=verify, config=config)

    @property
    def client(self):
        """One client per thread: boto3 clients are thread-safe, but sharing one
        serialises on its connection pool under many workers."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client()
        return client

    def describe(self):
        where = "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://%s" % self.bucket
        if self.settings.s3_endpoint:
            where += " at %s" % self.settings.s3_endpoint
        return where

    def check(self):
        """One quick request with few retries, so a wrong port fails in seconds."""
        try:
            self._client(max_attempts=2).head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._translate(exc, "check", None)

    # -- errors ----------------------------------------------------------------------
    def _translate(self, exc, action, key):
        exceptions = self._botocore.exceptions
        where = self.describe()
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
                                   % (action, key, code, error.get("Message", "")),
                                   code="s3_error")
        if isinstance(exc, RepositoryError):
            return exc
        return RepositoryError("S3 %s of %s failed: %s" % (action, key, exc),
                               code="s3_error")

    def _key(self, key):
        return "%s/%s" % (self.prefix, key) if self.prefix else key

    def _unkey(self, full):
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- objects ---------------------------------------------------------------------
    def put(self, key, data, sha256=None, if_absent=False):
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        args = dict(Bucket=self.bucket, Key=self._key(key), Body=data,
                    Metadata={"sha256": sha256})
        if self.settings.s3_request_checksum == "when_required":
            args["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        else:
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        if if_absent:
            # A HEAD first, because not every S3-compatible server honours If-None-Match.
            if self.head(key) is not None:
                raise Conflict("object %s already exists in %s and is never overwritten"
                               % (key, self.describe()), code="object_exists", key=key)
            args["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**args)
        except Exception as exc:
            raise self._translate(exc, "put", key)

    def put_file(self, key, path, sha256=None, if_absent=False):
        if if_absent and self.head(key) is not None:
            raise Conflict("object %s already exists in %s and is never overwritten"
                           % (key, self.describe()), code="object_exists", key=key)
        sha256 = sha256 or file_sha256(path)
        transfer = self._boto3.s3.transfer.TransferConfig(
            multipart_threshold=self.settings.s3_part_size * MIB,
            multipart_chunksize=self.settings.s3_part_size * MIB,
            max_concurrency=max(1, self.settings.workers))
        try:
            self.client.upload_file(path, self.bucket, self._key(key),
                                    ExtraArgs={"Metadata": {"sha256": sha256}},
                                    Config=transfer)
        except Exception as exc:
            raise self._translate(getattr(exc, "last_exception", None) or exc, "put", key)

    def get(self, key):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise self._translate(exc, "get", key)

    def head(self, key):
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return None
            raise self._translate(exc, "head", key)
        except Exception as exc:
            raise self._translate(exc, "head", key)
        return ObjectInfo(key, answer["ContentLength"],
                          answer.get("Metadata", {}).get("sha256"))

    def _pages(self, prefix, **extra):
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix), **extra)
        except Exception as exc:
            raise self._translate(exc, "list", prefix)

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
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._translate(exc, "head", key)
        state = head.get("Restore") or ""
        if 'ongoing-request="false"' in state:
            return True
        if 'ongoing-request="true"' in state:
            return False
        try:
            self.client.restore_object(Bucket=self.bucket, Key=self._key(key),
                                       RestoreRequest={"Days": days,
                                                       "GlacierJobParameters": {"Tier": tier}})
        except Exception as exc:
            error = getattr(exc, "response", {}).get("Error", {})
            if error.get("Code") != "RestoreAlreadyInProgress":
                raise self._translate(exc, "thaw", key)
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
            try:
                answer = self.client.delete_objects(Bucket=self.bucket,
                                                    Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                raise self._translate(exc, "delete", batch[0]["Key"])
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RepositoryError("cannot delete %s: %s %s" % (
                    first.get("Key"), first.get("Code"), first.get("Message")),
                    code="delete_failed")


def _epoch(moment):
    return moment.timestamp() if moment is not None else None
