# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One module per verb: backup, restore, info. Each exposes ``run(settings,
progress, dry_run)`` returning a JSON-ready dict with a ``changed`` key."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type
