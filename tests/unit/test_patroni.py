"""Patroni-aware designation: every member computes the same designated member from the
member list Patroni serves from the DCS (GET /cluster), whatever member asks."""
from __future__ import absolute_import, division, print_function

import socket

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import ConfigError, PostgresError
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.postgres import patroni

MiB = 1024 * 1024


def member(name, role="replica", state="streaming", lag=0, **tags):
    out = {"name": name, "role": role, "state": state, "host": "10.0.0.%d" % len(name),
           "port": 5432, "timeline": 3, "tags": tags}
    if role != "leader":
        out["receive_lag"] = out["replay_lag"] = out["lag"] = lag
    return out


THREE = [member("pg1", role="leader", state="running"), member("pg3"), member("pg2")]


def designated(mode, members, max_lag=64 * MiB):
    """The set of members whose own designation says 'back up' (must be one or none)."""
    return {m["name"] for m in members
            if patroni.designation(mode, {"name": m["name"], "scope": "main",
                                          "members": members}, max_lag) is None}


@pytest.mark.parametrize("mode,expected", [
    ("primary", {"pg1"}), ("prefer-standby", {"pg2"}), ("standby", {"pg2"})])
def test_exactly_one_member_backs_up(mode, expected):
    assert designated(mode, THREE) == expected


def test_the_choice_does_not_depend_on_member_order():
    assert designated("prefer-standby", list(reversed(THREE))) == {"pg2"}


def test_a_nofailover_replica_is_preferred_it_never_has_to_lead():
    members = THREE[:2] + [member("pg2"), member("pg9", nofailover=True)]
    assert designated("prefer-standby", members) == {"pg9"}


@pytest.mark.parametrize("broken", [
    member("pg2", state="starting"), member("pg2", state="stopped"),
    member("pg2", lag="unknown"), member("pg2", lag=65 * MiB),
    member("pg2", nobackup=True), member("pg2", nobackup="true")])
def test_an_unhealthy_or_excluded_replica_is_passed_over(broken):
    members = [member("pg1", role="leader", state="running"), broken, member("pg3")]
    assert designated("prefer-standby", members) == {"pg3"}


def test_no_healthy_replica_the_leader_backs_up_with_prefer_standby():
    members = [member("pg1", role="leader", state="running"), member("pg2", lag=None)]
    assert designated("prefer-standby", members) == {"pg1"}


def test_no_healthy_replica_nobody_backs_up_with_standby_and_says_why():
    members = [member("pg1", role="leader", state="running"), member("pg2", nobackup=True)]
    assert designated("standby", members) == set()
    reason = patroni.designation("standby", {"name": "pg1", "scope": "main",
                                             "members": members}, 64 * MiB)
    assert "no member backs up" in reason and "nobackup" in reason


def test_the_reason_names_the_designated_member():
    reason = patroni.designation("prefer-standby", {"name": "pg1", "scope": "main",
                                                    "members": THREE}, 64 * MiB)
    assert "replica pg2" in reason and "not this member (pg1)" in reason


def test_a_standby_cluster_leader_counts_as_the_leader():
    members = [member("pg1", role="standby_leader", state="running")]
    assert designated("primary", members) == {"pg1"}


def _closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_auto_with_nothing_listening_means_no_patroni(monkeypatch):
    monkeypatch.setattr(patroni, "DEFAULT_URL", "http://127.0.0.1:%d" % _closed_port())
    assert patroni.view("auto") is None
    assert patroni.view("off") is None


def test_an_explicit_url_that_does_not_answer_is_an_error():
    url = "http://127.0.0.1:%d" % _closed_port()
    with pytest.raises(PostgresError) as caught:
        patroni.view(url)
    assert caught.value.code == "patroni_unreachable" and caught.value.exit_code == 4
    assert url in caught.value.msg and "patroni_url" in caught.value.msg


def test_auto_where_something_else_answers_is_an_error_not_a_silent_fallback(monkeypatch):
    """A service that is not Patroni on its port: pgdr cannot know who leads, so it says
    so instead of deciding from PostgreSQL's views behind Patroni's back."""
    import http.server
    import threading

    class NotPatroni(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotPatroni)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(patroni, "DEFAULT_URL", "http://127.0.0.1:%d" % server.server_port)
        with pytest.raises(PostgresError) as caught:
            patroni.view("auto")
        assert caught.value.code == "patroni_unreachable" and "HTTP 404" in caught.value.msg
    finally:
        server.shutdown()
        server.server_close()


def test_patroni_daemons_are_found_by_their_command_line(tmp_path):
    """The staged restore's guard looks for Patroni itself (its console script or
    ``python -m patroni``), never for patronictl or a server that only mentions it."""
    commands = {"10": ["/usr/bin/python3", "/usr/local/bin/patroni", "/etc/patroni.yml"],
                "11": ["/usr/bin/python3", "/usr/local/bin/patronictl", "list"],
                "12": ["python3", "-m", "patroni", "/etc/patroni.yml"],
                "13": ["postgres", "-D", "/var/lib/postgresql/patroni"],
                "14": ["/opt/patroni/bin/patroni", "patroni.yml"],
                "16": ["/usr/bin/python3", "-s", "/usr/bin/patroni", "/etc/patroni.yml"],
                "17": ["python3", "-Es", "-u", "-m", "patroni", "cfg"],
                "18": ["python", "patroni.py", "cfg"],
                "19": ["less", "/var/log/patroni"],
                "20": ["python3", "-c", "import patroni", "patroni"],
                "21": ["python3", "-W", "ignore", "/opt/p/bin/patroni", "cfg"],
                "22": ["python3", "-mpatroni", "cfg"],
                "23": ["/usr/libexec/platform-python", "-sW", "ignore", "/usr/bin/patroni"],
                "24": ["pypy3", "--check-hash-based-pycs", "never", "patroni.py", "cfg"],
                "25": ["python3", "-sX", "dev", "/usr/bin/patronictl", "list"],
                "26": ["python3", "-", "patroni"]}
    for pid, argv in commands.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(("\0".join(argv) + "\0").encode())
    (tmp_path / "15").mkdir()  # a process that ended meanwhile: no cmdline left
    (tmp_path / "self").mkdir()
    assert patroni.daemons(str(tmp_path)) == [10, 12, 14, 16, 17, 18, 21, 22, 23, 24]


def test_a_patroni_data_directory_is_known_by_its_dynamic_configuration(tmp_path):
    assert not patroni.manages(str(tmp_path))
    (tmp_path / "patroni.dynamic.json").write_text("{}")
    assert patroni.manages(str(tmp_path))


class _ConfigServer(object):
    """Patroni's /config as its REST API serves it, answering 409 to the PATCHes named in
    ``conflicts`` (1-based), the way Patroni does when the DCS key changed between its read
    and its write. ``others_apply``: the conflicting write was another member's, with the
    same settings (the archiving role on every node at once)."""

    def __init__(self, conflicts, others_apply):
        import http.server
        import json
        import threading
        self.config = {"ttl": 20, "postgresql": {"parameters": {"archive_mode": "off"}}}
        self.patches = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's name
                self._answer(200, outer.config)

            def do_PATCH(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.patches.append(body)
                if len(outer.patches) in conflicts:
                    if others_apply:
                        outer._merge(body)
                    return self._answer(409, {})
                outer._merge(body)
                self._answer(200, outer.config)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _merge(self, body):
        self.config["postgresql"]["parameters"].update(body["postgresql"]["parameters"])

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("conflicts, others_apply, changed, patches", [
    ((1,), True, [], 1),                       # another member wrote the same: nothing left
    ((1, 2), False, ["archive_mode"], 3),      # lost twice, then written
])
def test_a_conflicting_patch_of_the_dynamic_configuration_is_read_again(
        monkeypatch, conflicts, others_apply, changed, patches):
    """Three members configured at once PATCH one DCS key: Patroni answers 409 to the
    losers. The setting must end up there, and a member reports a change only when its own
    write made it."""
    monkeypatch.setattr(patroni.time, "sleep", lambda seconds: None)
    server = _ConfigServer(conflicts, others_apply)
    try:
        assert patroni.apply_configuration(server.url, {"archive_mode": "on"}) == changed
        assert server.config["postgresql"]["parameters"] == {"archive_mode": "on"}
        assert len(server.patches) == patches
    finally:
        server.close()


def test_a_patch_that_always_conflicts_fails_clearly_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(patroni.time, "sleep", lambda seconds: None)
    server = _ConfigServer(range(1, 100), False)
    try:
        with pytest.raises(PostgresError) as caught:
            patroni.apply_configuration(server.url, {"archive_mode": "on"})
        assert caught.value.code == "patroni_config_refused"
        assert "HTTP 409" in caught.value.msg and server.url in caught.value.msg
        assert server.config["postgresql"]["parameters"] == {"archive_mode": "off"}
        assert len(server.patches) == patroni.CONFIG_ATTEMPTS
    finally:
        server.close()


def _fake_patronictl(tmp_path, leader=""):
    """A patronictl that asks remove's questions as Patroni does: the scope, the sentence,
    then the leader's name when the DCS holds a leader key; it records what it was told."""
    script = tmp_path / "patronictl"
    script.write_text(
        "#!/bin/sh\n"
        "echo \"$@\" > %(d)s/argv\n"
        "if [ \"$3\" = list ]; then\n"
        "  [ \"$4\" = molecule ] || { echo 'no cluster'; exit 1; }\n"
        "  echo 'InsecureRequestWarning: Unverified HTTPS request' >&2\n"
        "  echo '[{\"Cluster\": \"molecule\", \"Member\": \"pg1\", \"Role\": \"Leader\"}]'; exit 0\n"
        "fi\n"
        "read scope; read sure\n"
        "echo \"$scope|$sure\" > %(d)s/answers\n"
        "[ \"$scope\" = \"$4\" ] || { echo 'Cluster names specified do not match'; exit 1; }\n"
        "[ \"$sure\" = 'Yes I am aware' ] || { echo 'You did not exactly type'; exit 1; }\n"
        "if [ -n '%(leader)s' ] && [ ! -f %(d)s/key-expired ]; then\n"
        "  printf 'This cluster currently is healthy. Please specify the leader name to continue: '\n"
        "  read name || { echo 'Aborted!'; exit 1; }\n"
        "fi\n"
        "touch %(d)s/removed\n" % {"d": tmp_path, "leader": leader})
    script.chmod(0o755)
    return str(script)


def test_removing_the_cluster_from_the_dcs_answers_the_two_questions(tmp_path):
    patroni.remove_cluster(_fake_patronictl(tmp_path), "/etc/patroni/p.yml", "molecule")
    assert (tmp_path / "argv").read_text().split() == ["-c", "/etc/patroni/p.yml", "remove", "molecule"]
    assert (tmp_path / "answers").read_text().strip() == "molecule|Yes I am aware"
    assert (tmp_path / "removed").exists()


def test_a_cluster_whose_dcs_still_holds_a_leader_is_never_removed(tmp_path):
    """patronictl asks for the leader's name when a leader key is left (a member's Patroni
    still runs): pgdr gives none, patronictl aborts, and the error says so."""
    with pytest.raises(ConfigError) as caught:
        patroni.remove_cluster(_fake_patronictl(tmp_path, leader="pg1"), "/p.yml", "molecule",
                               wait=3)
    assert caught.value.code == "restore_patroni_dcs"
    assert "exit 1" in caught.value.msg and "Aborted!" in caught.value.msg
    assert "leader key after 3 s" in caught.value.msg and "nothing was changed" in caught.value.msg
    assert not (tmp_path / "removed").exists()


def test_a_missing_patronictl_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        patroni.remove_cluster(str(tmp_path / "nowhere" / "patronictl"), "/p.yml", "molecule")
    assert caught.value.code == "restore_patroni_dcs"
    assert str(tmp_path / "nowhere" / "patronictl") in caught.value.msg


def test_a_leader_key_left_by_a_stopped_patroni_is_waited_out(tmp_path, monkeypatch):
    """A Patroni stopped without releasing its key (killed, say): the key expires within
    Patroni's ttl, and the removal is asked again until then."""
    patronictl = _fake_patronictl(tmp_path, leader="pg1")
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        (tmp_path / "key-expired").touch()

    monkeypatch.setattr(patroni, "_pause", sleep)
    patroni.remove_cluster(patronictl, "/p.yml", "molecule")
    assert slept == [2] and (tmp_path / "removed").exists()


def test_patronictl_and_the_dcs_are_checked_before_anything_stops(tmp_path):
    patronictl = _fake_patronictl(tmp_path)
    members = patroni.check_cluster(patronictl, "/p.yml", "molecule")
    assert members[0]["Member"] == "pg1"
    assert (tmp_path / "argv").read_text().split() == ["-c", "/p.yml", "list", "molecule", "-f", "json"]
    with pytest.raises(ConfigError) as caught:
        patroni.check_cluster(patronictl, "/p.yml", "other")
    assert caught.value.code == "restore_patroni_dcs" and "no cluster" in caught.value.msg
    with pytest.raises(ConfigError) as caught:
        patroni.check_cluster(str(tmp_path / "missing"), "/p.yml", "molecule")
    assert caught.value.code == "restore_patroni_dcs" and "cannot run" in caught.value.msg
    assert not (tmp_path / "removed").exists()
