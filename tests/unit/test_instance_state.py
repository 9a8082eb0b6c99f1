"""Instance.state() when a recovery without a target ends between its statements: the
second statement (pg_get_wal_replay_pause_state) fails with "recovery is not in
progress"; state() must ask again and report the promoted server, not fail the drill
(a race seen in CI on a drill of "latest")."""
import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    PostgresError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import instance

IN_RECOVERY = (True, 150000, "/nowhere", "on", 1, "0/3000000", None, None)
PROMOTED = (False, 150000, "/nowhere", "on", 1, "0/3000000", None, None)


class Scripted(instance.Instance):
    """An Instance whose server answers from a script: (statement prefix, answer)."""

    def __init__(self, answers):
        super(Scripted, self).__init__(settings=None)
        self.answers = list(answers)
        self.asked = []

    def rows(self, sql, params=(), database=None, timeout=5):
        self.asked.append(sql)
        prefix, answer = self.answers.pop(0)
        assert sql.startswith(prefix), (sql, prefix)
        if isinstance(answer, Exception):
            raise answer
        return answer


def not_in_recovery():
    return PostgresError("PostgreSQL refused SELECT: recovery is not in progress",
                         code="postgres_refused")


def after_promotion():
    return [(instance.STATE_SQL, [PROMOTED]),
            ("SELECT pg_current_wal_lsn", [("0/3000060", "000000020000000000000003")]),
            ("SELECT datname", [("postgres",)]),
            ("SELECT oid::text", [])]


def test_recovery_ending_between_statements_reads_the_promoted_state(monkeypatch):
    monkeypatch.setattr(instance, "postmaster_pid", lambda datadir: 4242)
    server = Scripted([(instance.STATE_SQL, [IN_RECOVERY]),
                       ("SELECT pg_get_wal_replay_pause_state", not_in_recovery())]
                      + after_promotion())
    now = server.state()
    assert now["up"] and not now["in_recovery"]
    assert now["pause_state"] == "not in recovery" and now["timeline"] == 2
    assert not server.answers


def test_a_pause_state_that_keeps_failing_in_recovery_is_an_error(monkeypatch):
    monkeypatch.setattr(instance, "postmaster_pid", lambda datadir: 4242)
    server = Scripted([(instance.STATE_SQL, [IN_RECOVERY]),
                       ("SELECT pg_get_wal_replay_pause_state", not_in_recovery()),
                       (instance.STATE_SQL, [IN_RECOVERY]),
                       ("SELECT pg_get_wal_replay_pause_state", not_in_recovery())])
    with pytest.raises(PostgresError, match="recovery is not in progress"):
        server.state()


class Clock(object):
    """time for wait_streaming: each sleep moves it on."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_standby_counts_as_streaming_only_on_the_followed_timeline(monkeypatch):
    monkeypatch.setattr(instance, "time", Clock())
    receiver = "SELECT pid, status, received_tli"
    server = Scripted([(receiver, PostgresError("starting up", code="postgres_unavailable")),
                       (receiver, []),
                       (receiver, [(77, "streaming", 1, 1)]),  # the old primary's timeline
                       (receiver, [(77, "streaming", 2, 2)])])
    assert server.wait_streaming(2, timeout=10) == {"status": "streaming", "timeline": 2}
    assert len(server.asked) == 4


def test_a_standby_that_never_streams_fails_and_says_what_it_saw(monkeypatch):
    monkeypatch.setattr(instance, "time", Clock())

    class Settings(object):
        pg_host, pg_port, pg_user = "127.0.0.1", 5432, "monitor"

    server = Scripted([("SELECT pid, status", [(77, "waiting", 0, 2)])] * 40)
    server.settings = Settings()
    with pytest.raises(PostgresError) as caught:
        server.wait_streaming(2, timeout=5)
    assert caught.value.code == "restore_standby_not_streaming"
    assert "on timeline 2" in caught.value.msg and "WAL receiver waiting" in caught.value.msg


def test_a_receiver_the_user_may_not_see_is_a_privilege_error_at_once(monkeypatch):
    monkeypatch.setattr(instance, "time", Clock())

    class Settings(object):
        pg_host, pg_port, pg_user = "127.0.0.1", 5432, "monitor"

    server = Scripted([("SELECT pid, status", [(77, None, None, None)])])
    server.settings = Settings()
    with pytest.raises(PostgresError) as caught:
        server.wait_streaming(2, timeout=600)
    assert "monitor may not read pg_stat_wal_receiver" in caught.value.msg
    assert "pg_read_all_stats" in caught.value.msg and len(server.asked) == 1
