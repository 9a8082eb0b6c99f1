# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository storage: one interface (base.Storage), two backends, and the wrapper
that encrypts (sealed.Sealed)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Imported with this package, not on first use: a staged restore calls open_storage in a
# child forked to the cluster's OS user, which cannot read a module's root-owned payload.
from .sealed import Sealed  # encrypts when the repository is encrypted


def open_storage(settings, events=None):
    """The backend that ``settings.repo_type`` names, not yet contacted. ``events``
    (a callable taking one line, e.g. progress.event) hears of every retry and re-read;
    without it they go to stderr, one line each."""
    if settings.repo_type == "posix":
        from .posix import PosixStorage
        storage = PosixStorage(settings)
    else:
        from .s3 import S3Storage  # boto3 is imported only when S3 is used
        storage = S3Storage(settings)
    storage = Sealed(storage, settings)
    storage.events = events
    return storage
