# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repository storage: one interface (base.Storage), two backends."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


def open_storage(settings):
    """The backend that ``settings.repo_type`` names, not yet contacted."""
    if settings.repo_type == "posix":
        from .posix import PosixStorage
        return PosixStorage(settings)
    from .s3 import S3Storage  # boto3 is imported only when S3 is used
    return S3Storage(settings)
