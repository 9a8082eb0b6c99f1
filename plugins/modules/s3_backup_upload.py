#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: s3_backup_upload
short_description: Put local files into the backup repository, verified and idempotent
version_added: 0.1.0
description:
  - Uploads a local file, or a directory recursively, into the repository under the key
    O(dest) - configuration, scripts, logical dumps or runbooks kept beside the backups.
  - Each object is sent with its SHA-256 and verified after the upload against what the
    repository reports (size, and SHA-256 from the object's metadata or by reading it
    back).
  - An object that already holds the same bytes is not uploaded again
    (RV(ignore:changed=false)). An object with different content is left untouched and the
    task fails, unless O(overwrite=different).
  - The whole upload is checked before anything is written, so a refused key or a
    conflicting object means that nothing was uploaded.
author:
  - pgdr contributors (@pgdr)
extends_documentation_fragment:
  - pgdr.postgresql.repository
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Compares every file with the repository and reports in RV(uploaded) exactly
      the keys a real run would write, and the same RV(ignore:changed).
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  src:
    description:
      - Local file or directory to put into the repository; a directory is uploaded
        recursively.
      - Only regular files (and links to them) are uploaded; empty directories are not
        represented in an object store.
    type: path
    required: true
  dest:
    description:
      - Key in the repository, relative to its root (and repo_prefix). For a file, a dest
        ending in '/' receives the file under its own name; for a directory, its files go
        below dest. Keys of the form NAME/backup/... and NAME/wal/... belong to pgdr and are
        refused.
      - Keys with empty, V(.) or V(..) segments, or starting with V(/), are refused.
    type: str
    required: true
  overwrite:
    description:
      - 'What to do when an object exists with different content: never (fail and write
        nothing) or different (replace it). An object that holds the same bytes is never
        uploaded again.'
      - The default V(never) keeps what the repository holds; replacing an object is a
        decision to make explicitly.
    type: str
    default: never
    choices:
      - never
      - different
notes:
  - The module runs on the managed node, and O(src) is a path there. Use C(delegate_to) to
    upload from another host.
  - Uploads run in parallel, 4 files at a time; large files go in multipart pieces of
    O(s3_part_size) MiB.
seealso:
  - module: pgdr.postgresql.pg_backup
requirements:
  - boto3 (S3 repositories)
'''

EXAMPLES = r'''
- name: Keep the cluster's configuration beside its backups
  pgdr.postgresql.s3_backup_upload:
    s3_bucket: pg-backups
    s3_endpoint: https://s3.eu-west-1.amazonaws.com
    src: /etc/postgresql/16/main/
    dest: main/config/

- name: Store one logical dump, replacing an older copy of that key
  pgdr.postgresql.s3_backup_upload:
    config_file: /etc/pgdr/pgdr.conf
    credentials_file: /etc/pgdr/credentials.conf
    src: /var/backups/globals.sql
    dest: main/dumps/globals.sql
    overwrite: different
'''

RETURN = r'''
uploaded:
  description: Keys written (in check mode, the keys that would be written).
  returned: success
  type: list
  elements: str
  sample: ["main/config/pg_hba.conf"]
unchanged:
  description: Keys that already held the same bytes.
  returned: success
  type: list
  elements: str
  sample: ["main/config/postgresql.conf"]
objects:
  description: Every file considered, with its key and what was done.
  returned: success
  type: list
  elements: dict
  contains:
    key:
      description: Object key, relative to the repository root.
      type: str
      sample: main/config/pg_hba.conf
    src:
      description: Local file.
      type: str
      sample: /etc/postgresql/16/main/pg_hba.conf
    size:
      description: Bytes.
      type: int
      sample: 5711
    sha256:
      description: SHA-256 of the content (hex).
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    action:
      description: V(create), V(replace) or V(unchanged).
      type: str
      sample: create
bytes:
  description: Bytes uploaded (or that would be).
  returned: success
  type: int
  sample: 5711
repository:
  description: Where the repository is (no secrets).
  returned: success
  type: str
  sample: s3://pg-backups
keys:
  description: With RV(error_code=object_differs), the keys whose content differs.
  returned: failure
  type: list
  elements: str
  sample: ["main/config/pg_hba.conf"]
events:
  description: What the engine reported while it worked.
  returned: always
  type: list
  elements: str
  sample: ["uploaded 1 object(s), 5711 byte(s) to s3://pg-backups; 1 unchanged"]
error_code:
  description:
    - Stable code of the failure, for example V(object_differs), V(dest_reserved),
      V(dest_invalid), V(src_not_found), V(upload_verify_failed).
  returned: failure
  type: str
  sample: object_differs
stage:
  description: Stage that failed (config, plan, connect, verify).
  returned: failure
  type: str
  sample: plan
'''

from ansible_collections.pgdr.postgresql.plugins.module_utils._adapter import PgdrModule
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import upload


ARGS = dict(groups=("repo", "upload"), exclude=("cluster",), required=("src", "dest"))


def main():
    PgdrModule(**ARGS).run(upload)


if __name__ == "__main__":
    main()
