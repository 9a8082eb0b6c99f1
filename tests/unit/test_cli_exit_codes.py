"""The exit-code contract of every verb, enforced on cli.run (issue 11, defect 2).

restore_command must exit 1 only when the WAL file is certainly not in the archive:
PostgreSQL takes 1 for the end of the archive and promotes. Every other wal-fetch failure,
a local one (OSError) or a bug (ValueError) included, must exit above 125 so that recovery
stops. archive_command must exit 0 only once the file is durably stored."""
import errno
import io

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli, errors

CLASSES = [errors.PgdrError, errors.ConfigError, errors.RepositoryError, errors.PostgresError,
           errors.IntegrityError, errors.TargetRefused, errors.NotFound, errors.WalNotFound,
           errors.Conflict, errors.ObjectiveMissed]
UNEXPECTED = [OSError(errno.ENOSPC, "No space left on device"), ValueError("a bug"),
              KeyError("a bug"), ZeroDivisionError("a bug")]
POSITIONAL = {"wal-push": ["pg_wal/000000010000000000000001"],
              "wal-fetch": ["000000010000000000000001", "pg_wal/RECOVERYXLOG"],
              "restore-stage": ["read"]}


class _Settings(object):
    def __getattr__(self, name):
        return None


def _run(monkeypatch, verb, exc, environ=None):
    class Module(object):
        @staticmethod
        def run(settings, progress, dry_run=False, **unused):
            raise exc

    monkeypatch.setattr(cli, "_command_module", lambda name: Module)
    monkeypatch.setattr(cli, "resolve", lambda *a, **k: _Settings())
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([verb] + POSITIONAL.get(verb, []), out, err, environ=environ or {})
    return code, err.getvalue()


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_d11_2_every_verb_and_error_class(monkeypatch, verb, cls):
    code, err = _run(monkeypatch, verb, cls("it failed"))
    if verb == "wal-fetch":
        expected = 1 if cls is errors.WalNotFound else 128 + cls.exit_code
        assert code == expected
        if cls is not errors.WalNotFound:
            assert code > 125
    else:
        assert code == cls.exit_code
    assert code != 0  # wal-push included: never 0 unless the file is stored
    assert err.count("\n") == 1 and "it failed" in err  # one readable line


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
@pytest.mark.parametrize("exc", UNEXPECTED, ids=lambda e: type(e).__name__)
def test_d11_2_unexpected_exceptions(monkeypatch, verb, exc):
    code, err = _run(monkeypatch, verb, exc)
    if verb == "wal-fetch":
        assert code == 128 + errors.PgdrError.exit_code and code > 125
    else:
        assert code == errors.PgdrError.exit_code
    assert "error [internal]" in err and type(exc).__name__ in err


def test_d11_2_debug_traceback_keeps_the_exit_code(monkeypatch):
    code, err = _run(monkeypatch, "wal-fetch", OSError(errno.ENOSPC, "No space left"),
                     environ={"PGDR_DEBUG": "1"})
    assert code > 125 and "Traceback" in err


def test_d11_2_only_the_class_means_not_found(monkeypatch):
    """No string literal links wal-fetch and the CLI: a NotFound that merely carries the
    code 'wal_not_found' (a backup, an object) is not the end of the archive."""
    code, dummy = _run(monkeypatch, "wal-fetch", errors.NotFound("x", code="wal_not_found"))
    assert code == 128 + errors.NotFound.exit_code
    assert issubclass(errors.WalNotFound, errors.NotFound)
    assert errors.WalNotFound("x").code == "wal_not_found"


def test_d11_2_usage_errors_of_wal_fetch_stop_recovery():
    out = io.StringIO()
    assert cli.run(["wal-fetch", "000000010000000000000001"], out, environ={}) > 125
    assert cli.run(["wal-fetch", "--no-such-flag", "a", "b"], out, environ={}) > 125
    assert cli.run(["wal-push", "--no-such-flag", "a"], out, environ={}) == 2


def test_d11_13_end_of_archive_is_not_logged_as_an_error(monkeypatch):
    code, err = _run(monkeypatch, "wal-fetch", errors.WalNotFound(
        "wal-fetch: 000000010000000000000009 is not in the archive of cluster main"))
    assert code == 1
    assert "error" not in err and "(end of archive)" in err
    assert err.count("\n") == 1
