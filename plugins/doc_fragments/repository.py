# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Repository options, documented once; tests/unit/test_docs.py checks them
    against the engine's OPTIONS (plugins/module_utils/_pgdr/options.py)."""

    # Where the repository is and how to reach it.
    DOCUMENTATION = r'''
options:
  repo_type:
    description:
      - Repository backend.
    type: str
    default: s3
    choices:
      - s3
      - posix
  repo_path:
    description:
      - Root directory of a posix repository (a local disk or an NFS mount). Required when
        repo_type is posix.
    type: path
  repo_prefix:
    description:
      - Key prefix inside the bucket under which every cluster of this repository lives.
    type: str
    default: ''
  s3_bucket:
    description:
      - Bucket of an S3 repository.
    type: str
  s3_endpoint:
    description:
      - Endpoint URL of an S3-compatible service, for example https://s3.eu-west-1.amazonaws.com
        or http://127.0.0.1:8333.
    type: str
  s3_region:
    description:
      - Region of the bucket.
    type: str
    default: us-east-1
  s3_addressing:
    description:
      - 'Bucket addressing: path (bucket in the URL path, for most S3-compatible servers),
        virtual (bucket in the host name) or auto.'
    type: str
    default: auto
    choices:
      - auto
      - path
      - virtual
  s3_access_key:
    description:
      - Access key id. When unset, boto3 looks in the environment, the profile and the instance
        role.
    type: str
  s3_secret_key:
    description:
      - Secret access key.
    type: str
  s3_session_token:
    description:
      - Session token of temporary credentials.
    type: str
  s3_profile:
    description:
      - Name of an AWS shared-credentials profile.
    type: str
  s3_verify_tls:
    description:
      - Verify the server's TLS certificate.
    type: bool
    default: true
  s3_ca_bundle:
    description:
      - CA bundle to verify the server's certificate with.
    type: path
  s3_request_checksum:
    description:
      - 'When boto3 computes request checksums: when_supported (boto3''s default) or when_required
        (for S3-compatible servers that reject the default CRC32 checksums).'
    type: str
    default: when_supported
    choices:
      - when_supported
      - when_required
  s3_max_attempts:
    description:
      - Attempts per S3 request (retries with exponential backoff).
    type: int
    default: 8
  s3_part_size:
    description:
      - Part size in MiB of multipart transfers.
    type: int
    default: 16
  encryption_passphrase:
    description:
      - Passphrase of the repository's encryption (a recipient of its data keys). Set on a new
        cluster, it encrypts every object; an encrypted cluster refuses clients without a key.
    type: str
  encryption_kms_key:
    description:
      - KMS key id or ARN of the repository's encryption (a recipient of its data keys, alone
        or beside encryption_passphrase).
    type: str
  encryption_kms_region:
    description:
      - 'Region of encryption_kms_key (default: s3_region).'
    type: str
  encryption_kms_endpoint:
    description:
      - "Endpoint URL of the KMS service (default: AWS's for the region)."
    type: str
  config_file:
    description:
      - A pgdr config file on the managed node (INI, section C([pgdr]), keys named like
        these parameters), for example the one the agent role writes.
      - Parameters left at their default take the file's value; parameters set to anything
        else win over it.
      - A restored cluster's default C(restore_command) runs C(pgdr wal-fetch) with this
        file (and O(credentials_file)).
    type: path
  credentials_file:
    description:
      - A pgdr credentials file on the managed node holding the secret settings (mode 0600),
        read after O(config_file).
    type: path
notes:
  - Secrets (O(s3_access_key), O(s3_secret_key), O(s3_session_token)) are never logged.
    When they are unset, boto3 finds credentials in the C(AWS_*) environment, the profile
    or the instance role.
  - The modules read no C(PGDR_*) environment variable. With O(config_file) or
    O(credentials_file), a parameter left at its default takes the file's value.
'''

    # Which cluster of the repository.
    CLUSTER = r'''
options:
  cluster:
    description:
      - Name of the cluster in the repository (its prefix). Letters, digits, '.', '_' and
        '-'.
    type: str
'''
