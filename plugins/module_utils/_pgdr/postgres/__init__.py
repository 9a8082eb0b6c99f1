# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the engine knows about PostgreSQL: sessions, WAL names, the data directory."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type
