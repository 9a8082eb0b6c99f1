# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: engine_options
short_description: The engine options of a dict that a pgdr module takes, checked
version_added: 0.1.0
description:
  - "Of a dict of engine options (the inventory's C(pgdr_options), for example
    C({s3_ca_bundle: /etc/ssl/corp.pem, workers: 8})), the ones that the module O(module)
    takes, from the engine's one option table (C(plugins/module_utils/_pgdr/options.py))
    and the module's own option groups; V(node) - every option, for the node's config file."
  - Fails, naming the key, when a key is not an engine option (with the closest one) or is
    a secret (secrets go in the credentials file, through their own C(no_log) variables).
author:
  - pgdr contributors (@pgdr)
options:
  _input:
    description: The engine options, by name.
    type: dict
    required: true
  module:
    description: A module of the collection (V(pg_backup), ...) or V(node).
    type: str
    required: true
'''

EXAMPLES = r'''
- name: Back up with the inventory's extra engine options
  pgdr.postgresql.pg_backup: "{{ pgdr_options | pgdr.postgresql.engine_options('pg_backup') }}"
'''

RETURN = r'''
_value:
  description: The options of the input that the module takes.
  type: dict
'''

import difflib
import importlib

from ansible.errors import AnsibleFilterError

PREFIX = "ansible_collections.pgdr.postgresql.plugins."


def _engine():
    options = importlib.import_module(PREFIX + "module_utils._pgdr.options")
    adapter = importlib.import_module(PREFIX + "module_utils._adapter")
    return options, adapter


def _taken_by(module, options, adapter):
    if module == "node":
        return set(o.name for o in options.OPTIONS)
    try:
        args = importlib.import_module(PREFIX + "modules." + module).ARGS
    except (ImportError, AttributeError):
        raise AnsibleFilterError("engine_options: %r is not a module of pgdr.postgresql "
                                 "(nor node)" % (module,))
    return set(adapter.option_names(args["groups"], args.get("exclude", ()),
                                    args.get("include", ())))


def engine_options(given, module):
    if not isinstance(given, dict):
        raise AnsibleFilterError("pgdr_options must be a dict of engine options, not %r"
                                 % (given,))
    options, adapter = _engine()
    for name in sorted(given):
        option = options.BY_NAME.get(name)
        if option is None:
            close = difflib.get_close_matches(name, sorted(options.BY_NAME), n=1)
            raise AnsibleFilterError("pgdr_options: %s is not an engine option%s (docs/cli.md, "
                                     "pgdr <verb> --help)" % (
                                         name, ": did you mean %s?" % close[0] if close else ""))
        if option.secret:
            raise AnsibleFilterError("pgdr_options: %s is a secret: set it with its own "
                                     "variable (ansible-vault), never in pgdr_options" % name)
    taken = _taken_by(module, options, adapter)
    return dict((name, value) for name, value in given.items() if name in taken)


class FilterModule(object):
    def filters(self):
        return {"engine_options": engine_options}
