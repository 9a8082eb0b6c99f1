# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgdr engine: plain Python shared by the Ansible modules and the node CLI.

Nothing in this package imports ansible: the same files are copied to database
nodes as the ``pgdr`` package and run by the ``pgdr`` launcher.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

ENGINE_VERSION = "0.1.0"
