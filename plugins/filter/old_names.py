# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: old_names
short_description: Role variables still set under their names from before pgdr 0.2.0
version_added: 0.1.0
description:
  - The roles' variables carry the collection's prefix and the role's name
    (C(pgdr_restore_port), was C(restore_port)). The old names are read until pgdr 0.2.0
    (each role's defaults fall back to them); this filter finds those set, so that the role
    can warn.
  - A role's variables are the options of its C(meta/argument_specs.yml); an old name is the
    new one without C(pgdr_), except where RENAMED says otherwise.
author:
  - pgdr contributors (@pgdr)
options:
  _input:
    description: The names of the variables that are set (C(query('ansible.builtin.varnames', '.'))).
    type: list
    elements: str
    required: true
  role_path:
    description: The role's directory (C(role_path)), or a list of roles' directories.
    type: raw
    required: true
'''

EXAMPLES = r'''
- name: Warn about variables still under their old names
  ansible.builtin.debug:
    msg: "deprecated variable names: {{ __old | join(', ') }}"
  when: __old | length > 0
  vars:
    __old: "{{ query('ansible.builtin.varnames', '.') | pgdr.postgresql.old_names(role_path) }}"
'''

RETURN = r'''
_value:
  description: One C(old -> new) line per old name that is set, sorted.
  type: list
  elements: str
'''

import os

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.yaml import yaml_load

# new name -> old name, where the old one is not the new one without "pgdr_"
# (pgdr_restore_node is the inventory's per-host flag, not the role's restoring host)
RENAMED = {"pgdr_restore_host": "restore_node"}


def old_names(names, role_path):
    paths = list(role_path) if isinstance(role_path, (list, tuple)) else [role_path]
    old = {}
    for path in paths:
        old.update((RENAMED.get(new, new[len("pgdr_"):]), new) for new in _options(path)
                   if new.startswith("pgdr_"))
    return ["%s -> %s" % (name, old[name]) for name in sorted(set(str(n) for n in names)) if name in old]


def _options(role_path):
    spec_file = os.path.join(str(role_path), "meta", "argument_specs.yml")
    try:
        with open(spec_file) as handle:
            return yaml_load(handle)["argument_specs"]["main"]["options"]
    except (OSError, KeyError, TypeError) as error:
        raise AnsibleFilterError("old_names: cannot read the options of %s: %s" % (spec_file, error))


class FilterModule(object):
    def filters(self):
        return {"old_names": old_names}
