"""Unit tests import the collection as Ansible does: as
``ansible_collections.pgdr.postgresql`` (a symlink to the repository in a
temporary directory put on sys.path), so that the engine, the adapter and the
modules are one set of modules, as in a real run."""
import atexit
import json
import os
import shutil
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collection_root():
    """A directory holding ansible_collections/pgdr/postgresql -> the repository."""
    for entry in sys.path:
        if os.path.isdir(os.path.join(entry, "ansible_collections", "pgdr", "postgresql")):
            return entry  # ansible-test units, or an installed collection
    root = tempfile.mkdtemp(prefix="pgdr-unit-")
    atexit.register(shutil.rmtree, root, True)
    os.makedirs(os.path.join(root, "ansible_collections", "pgdr"))
    os.symlink(REPO, os.path.join(root, "ansible_collections", "pgdr", "postgresql"))
    sys.path.insert(0, root)
    return root


COLLECTIONS_ROOT = _collection_root()


@pytest.fixture
def collections_root():
    return COLLECTIONS_ROOT


class ModuleExit(Exception):
    """exit_json / fail_json of a module run in-process."""

    def __init__(self, result):
        super(ModuleExit, self).__init__(result)
        self.result = result


@pytest.fixture
def run_module(capsys):
    """run_module(module, args, check_mode=False) -> the module's result dict."""
    from ansible.module_utils import basic

    def run(module, args, check_mode=False):
        args = dict(args, _ansible_check_mode=check_mode, _ansible_remote_tmp="/tmp",
                    _ansible_keep_remote_files=False)
        try:
            from ansible.module_utils.testing import patch_module_args
            context = patch_module_args(args)
        except ImportError:  # ansible-core < 2.19
            from unittest import mock
            context = mock.patch.object(
                basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
        capsys.readouterr()
        with context:
            with pytest.raises(SystemExit):
                module.main()
        out = capsys.readouterr().out
        return json.loads(out)

    return run
