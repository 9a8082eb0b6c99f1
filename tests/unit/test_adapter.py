"""The adapter: argument specs generated from OPTIONS."""
import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils import _adapter
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options

KIND_TO_TYPE = {"str": "str", "int": "int", "bool": "bool", "path": "path", "dict": "dict"}


@pytest.mark.parametrize("groups", [("repo",), ("repo", "pg", "backup"), ("repo", "restore"),
                                    ("repo", "upload")])
def test_argspec_matches_options(groups):
    spec = _adapter.argument_spec(groups)
    wanted = [o for o in options.OPTIONS if set(o.groups) & set(groups)]
    assert set(spec) == set(o.name for o in wanted) | set(_adapter.COMMON_EXTRAS)
    for o in wanted:
        entry = spec[o.name]
        assert entry["type"] == KIND_TO_TYPE[o.kind], o.name
        assert entry.get("default") == o.default, o.name
        assert entry.get("choices") == (list(o.choices) if o.choices else None), o.name
        assert entry.get("no_log", False) is o.secret, o.name
        assert "required" not in entry


def test_every_secret_is_no_log_and_nothing_else_is():
    spec = _adapter.argument_spec(("repo", "pg", "backup", "restore", "upload"))
    assert set(k for k, v in spec.items() if v.get("no_log")) == {
        "s3_access_key", "s3_secret_key", "s3_session_token", "pg_password",
        "encryption_passphrase"}


def test_exclude_required_extras():
    spec = _adapter.argument_spec(("repo", "restore"), exclude=("backup_id",),
                                  required=("target",),
                                  extras={"type": {"type": "str", "default": "full"}})
    assert "backup_id" not in spec and spec["type"]["default"] == "full"
    assert spec["target"]["required"] is True
    assert "required" not in _adapter.argument_spec(("repo", "restore"))["target"]
