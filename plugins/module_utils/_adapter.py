# -*- coding: utf-8 -*-
# Copyright: pgdr contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one bridge between Ansible modules and the pgdr engine.

* the argument spec comes from the engine's OPTIONS (types, defaults, choices,
  no_log for secrets), plus a few per-module parameters;
* module parameters become ``options.resolve(explicit=...)``; modules read no
  PGDR_* environment variable, and a config file only when ``config_file`` is
  given (parameters left at their default then take the file's value);
* check mode is the engine's dry run;
* a PgdrError becomes ``fail_json(msg, error_code, stage, **details)``;
* the engine's result becomes ``exit_json`` with the progress ``events``.

Modules import the engine through this module (and the verb they run), with
static imports: Ansible packs into the module payload only the module_utils
that it can see imported.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options as _options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, PgdrError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress
# Imported here, statically, so that Ansiballz ships them: the engine imports the
# storage backends lazily (boto3 only when S3 is used).
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.storage import (
    posix as _posix, s3 as _s3)

BACKENDS = (_posix.PosixStorage, _s3.S3Storage)

# Engine option kinds -> Ansible argument types.
KIND_TO_TYPE = {"str": "str", "int": "int", "bool": "bool", "path": "path", "dict": "dict",
                "list": "list"}

# Parameters every module has besides the engine's options.
COMMON_EXTRAS = {
    "config_file": {"type": "path"},
    "credentials_file": {"type": "path"},
}

# Parameters of the modules that check a restored copy (pg_instance verify, pg_restore_stage
# verify): the drill's checks, with one set of names.
CHECK_EXTRAS = {
    "target_action": {"type": "str", "default": "pause",
                      "choices": ["pause", "promote", "shutdown"]},
    "assertions": {"type": "list", "elements": "dict", "default": []},
    "expected_databases": {"type": "list", "elements": "str", "default": []},
    "amcheck": {"type": "bool", "default": True},
    "amcheck_install": {"type": "bool", "default": True},
}

# Result keys that AnsibleModule owns: engine details never overwrite them.
_RESERVED_RESULT_KEYS = frozenset(("msg", "failed", "changed", "error_code", "stage",
                                   "events", "exception", "invocation", "warnings",
                                   "deprecations", "skipped", "rc"))


def option_spec(option):
    """The argument spec entry of one engine option."""
    entry = {"type": KIND_TO_TYPE[option.kind]}
    if option.kind == "list":
        entry["elements"] = "str"
    if option.default is not None:
        entry["default"] = option.default
    if option.choices:
        entry["choices"] = list(option.choices)
    # Declared either way: a name like encryption_kms_key is an id, not a secret.
    entry["no_log"] = bool(option.secret)
    return entry


def option_names(groups, exclude=(), include=()):
    """Names of the engine options a module with these groups (and the named options of
    other groups) takes, in OPTIONS order."""
    wanted = set(groups)
    return [o.name for o in _options.OPTIONS
            if (wanted & set(o.groups) or o.name in include) and o.name not in exclude]


def argument_spec(groups, exclude=(), extras=None, required=(), files=True, include=()):
    """The argument spec of a module running the given option groups (with
    config_file and credentials_file unless files is false)."""
    spec = {}
    for name in option_names(groups, exclude, include):
        spec[name] = option_spec(_options.BY_NAME[name])
    for name in required:
        spec[name]["required"] = True
    if files:
        spec.update(dict((k, dict(v)) for k, v in COMMON_EXTRAS.items()))
    spec.update(extras or {})
    return spec


class PgdrModule(object):
    """An AnsibleModule whose engine options come from OPTIONS."""

    def __init__(self, groups, exclude=(), extras=None, required=(), needs=(), files=True,
                 include=(), **module_kwargs):
        self.names = option_names(groups, exclude, include)
        self.needs = needs
        module_kwargs.setdefault("supports_check_mode", True)
        self.module = AnsibleModule(
            argument_spec=argument_spec(groups, exclude, extras, required, files, include),
            **module_kwargs)
        self.progress = Progress()

    @property
    def params(self):
        return self.module.params

    def explicit(self):
        """Engine values given as module parameters."""
        params = self.module.params
        values = dict((name, params.get(name)) for name in self.names)
        if params.get("config_file") or params.get("credentials_file"):
            # A parameter at its default lets the file decide; the engine falls back
            # to the same default when the file does not set it either.
            values = dict((name, value) for name, value in values.items()
                          if value != _options.BY_NAME[name].default)
        return values

    def settings(self, **overrides):
        params = self.module.params
        explicit = self.explicit()
        explicit.update(overrides)
        for name in COMMON_EXTRAS:  # the engine records them (restore_command uses them)
            if params.get(name) and name in _options.BY_NAME:
                explicit[name] = params[name]
        settings = _options.resolve(
            explicit=explicit, config_file=params.get("config_file"),
            credentials_file=params.get("credentials_file"), environ={},
            config_required=bool(params.get("config_file")))
        missing = [name for name in self.needs if getattr(settings, name) in (None, "")]
        if missing:
            raise ConfigError("missing required parameter(s): %s (set them as module "
                              "parameters or in config_file)" % ", ".join(missing),
                              code="config_missing", stage="config")
        return settings

    def fail(self, exc):
        """fail_json from a PgdrError: msg, error_code, stage and its details."""
        details = dict((k, v) for k, v in exc.details.items()
                       if k not in _RESERVED_RESULT_KEYS)
        self.module.fail_json(msg=exc.msg, error_code=exc.code, stage=exc.stage,
                              events=self.progress.events, **details)

    def run(self, command, overrides=None):
        """Run an engine verb with the module's settings, then exit or fail.

        ``overrides(params)`` returns engine values computed from module-only
        parameters (it may raise PgdrError, reported like the engine's)."""
        failure = internal = result = None
        try:
            settings = self.settings(**(overrides(self.module.params) if overrides else {}))
            result = command.run(settings, self.progress, dry_run=self.module.check_mode)
        except PgdrError as exc:
            failure = exc
        except Exception as exc:  # a bug in pgdr: say so, with the traceback
            internal = (exc, traceback.format_exc())
        # Failing outside the except blocks: a structured failure is not a traceback.
        if failure is not None:
            self.fail(failure)
        if internal is not None:
            self.module.fail_json(msg="internal error in pgdr: %s: %s"
                                  % (type(internal[0]).__name__, internal[0]),
                                  error_code="internal", stage=None,
                                  events=self.progress.events, exception=internal[1])
        self.exit(result)

    def exit(self, result):
        result = dict(result)
        result["changed"] = bool(result.get("changed"))
        result["events"] = list(self.progress.events)
        self.module.exit_json(**result)
