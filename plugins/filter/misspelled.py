# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: misspelled
short_description: Variable names that look like a misspelled known name
version_added: 0.1.0
description:
  - Of the given variable names, those that are not known but close to a known one (difflib
    similarity at least O(cutoff)), each with the closest known name. The collection's
    playbooks use it to refuse C(-e piont=...) with "did you mean point?" instead of
    silently ignoring it.
author:
  - pgdr contributors (@pgdr)
options:
  _input:
    description: The variable names to look at (for example C(vars.keys())).
    type: list
    elements: str
    required: true
  known:
    description: The names that are known.
    type: list
    elements: str
    required: true
  cutoff:
    description: Similarity (0 to 1) from which an unknown name counts as a misspelling.
    type: float
    default: 0.8
'''

EXAMPLES = r'''
- name: Refuse a misspelled extra variable
  ansible.builtin.assert:
    that: __misspelled | length == 0
    fail_msg: "{{ __misspelled[0].name }} is not a variable of this playbook: did you mean {{ __misspelled[0].closest }}?"
  vars:
    __misspelled: "{{ vars.keys() | pgdr.postgresql.misspelled(['point', 'target']) }}"
'''

RETURN = r'''
_value:
  description: One entry per misspelled name, sorted by name, with C(name) and C(closest).
  type: list
  elements: dict
'''

import difflib


def misspelled(names, known, cutoff=0.8):
    known = sorted(set(str(k) for k in known))
    found = []
    for name in sorted(set(str(n) for n in names) - set(known)):
        close = difflib.get_close_matches(name, known, n=1, cutoff=float(cutoff))
        if close:
            found.append({"name": name, "closest": close[0]})
    return found


class FilterModule(object):
    def filters(self):
        return {"misspelled": misspelled}
