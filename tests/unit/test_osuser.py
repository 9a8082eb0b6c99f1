"""Work as the cluster's OS user from a root process (postgres/osuser.py): the answer
comes back, and so does an engine error with its class, code, stage and details."""
import os
import pwd
import subprocess

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import errors
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import osuser


def _postgres_uid():
    try:
        return pwd.getpwnam("postgres").pw_uid
    except KeyError:
        return None


needs_root_and_postgres = pytest.mark.skipif(
    os.geteuid() != 0 or _postgres_uid() is None,
    reason="switching users needs root and a postgres user (both in CI)")


def test_without_a_user_the_function_runs_here():
    assert osuser.call_as("", os.getpid) == os.getpid()
    assert osuser.switch_args("") == {}


def test_an_unknown_user_is_named():
    with pytest.raises(errors.ConfigError) as caught:
        osuser.call_as("no-such-user-pgdr", os.getpid)
    assert caught.value.code == "os_user_unknown" and "no-such-user-pgdr" in caught.value.msg


@needs_root_and_postgres
def test_the_work_runs_as_the_user_and_its_answer_comes_back():
    uid, gid, home = osuser.call_as("postgres", lambda: (os.geteuid(), os.getegid(),
                                                         os.environ["HOME"]))
    account = pwd.getpwnam("postgres")
    assert (uid, gid, home) == (account.pw_uid, account.pw_gid, account.pw_dir)
    assert os.geteuid() == 0  # the caller stays root


@needs_root_and_postgres
def test_an_engine_error_comes_back_with_its_class_code_stage_and_details():
    def refuse():
        raise errors.PostgresError("refused as %d" % os.geteuid(), code="recovery_failed",
                                   stage="recover", log="/x.log")
    with pytest.raises(errors.PostgresError) as caught:
        osuser.call_as("postgres", refuse)
    error = caught.value
    assert (error.code, error.stage, error.details) == ("recovery_failed", "recover",
                                                        {"log": "/x.log"})
    assert error.msg == "refused as %d" % _postgres_uid()


@needs_root_and_postgres
def test_a_bug_in_the_child_is_an_internal_error_not_a_hang():
    with pytest.raises(errors.PgdrError) as caught:
        osuser.call_as("postgres", lambda: 1 // 0)
    assert caught.value.code == "internal" and "ZeroDivisionError" in caught.value.msg


@needs_root_and_postgres
def test_commands_run_as_the_user():
    out = subprocess.run(["id", "-u"], stdout=subprocess.PIPE, check=True,
                         **osuser.switch_args("postgres"))
    assert int(out.stdout) == _postgres_uid()


@needs_root_and_postgres
def test_an_exit_in_the_child_never_runs_the_callers_code_twice():
    import sys
    with pytest.raises(errors.PgdrError) as caught:
        osuser.call_as("postgres", sys.exit, 3)
    assert caught.value.code == "internal" and "SystemExit" in caught.value.msg


@needs_root_and_postgres
def test_a_child_killed_says_so():
    import signal
    with pytest.raises(errors.PgdrError) as caught:
        osuser.call_as("postgres", lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert "killed by signal 9" in caught.value.msg


@needs_root_and_postgres
def test_commands_get_a_small_environment(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-the-postmaster")
    out = subprocess.run(["env"], stdout=subprocess.PIPE, check=True, text=True,
                         **osuser.switch_args("postgres"))
    names = {line.split("=", 1)[0] for line in out.stdout.splitlines()}
    assert "AWS_SECRET_ACCESS_KEY" not in names and {"HOME", "USER", "PATH"} <= names
