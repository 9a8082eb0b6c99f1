"""Issue 11, defect 11: every option value meets its declaration (bounds, form) before
anything runs, and every CLI verb refuses a bad command line in one line, exit 2."""
import io
import re

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli, options, verbs
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import ConfigError

INTS = [o for o in options.OPTIONS if o.kind == "int"]
LINES = [o for o in options.OPTIONS
         if o.kind in ("str", "path") and o.form != "text" and not o.choices]


def refused(explicit, environ=None):
    with pytest.raises(ConfigError) as info:
        options.resolve(explicit, environ=environ or {})
    exc = info.value
    assert exc.code == "config_invalid" and exc.stage == "config" and exc.exit_code == 2
    assert "\n" not in exc.msg, exc.msg
    return exc


# -- bounds: a table over OPTIONS, so an int option declared without bounds fails here --

@pytest.mark.parametrize("option", INTS, ids=lambda o: o.name)
def test_d11_11_every_int_option_declares_bounds(option):
    assert isinstance(option.minimum, int) and isinstance(option.maximum, int), option.name
    assert 0 <= option.minimum <= option.maximum, option.name
    if option.default is not None:
        assert option.minimum <= option.default <= option.maximum, option.name


@pytest.mark.parametrize("option", INTS, ids=lambda o: o.name)
def test_d11_11_int_bounds_are_inclusive_and_enforced(option):
    for value in (option.minimum, option.maximum):
        assert getattr(options.resolve({option.name: value}, environ={}), option.name) == value
        # the same from the environment and a config file: text
        assert getattr(options.resolve(environ={option.env: str(value)}), option.name) == value
    for value in (option.minimum - 1, option.maximum + 1):
        exc = refused({option.name: value})
        assert exc.msg == "%s=%d is out of range: expected an integer from %d to %d" % (
            option.name, value, option.minimum, option.maximum)
        assert exc.details["option"] == option.name
        exc = refused({}, environ={option.env: str(value)})
        assert exc.details["option"] == option.name


@pytest.mark.parametrize("option", INTS, ids=lambda o: o.name)
@pytest.mark.parametrize("value", ["abc", "1.5", "", "0x10", True, 2.5, float("inf")])
def test_d11_11_int_of_wrong_type_names_option_and_value(option, value):
    exc = refused({option.name: value})
    assert exc.msg.startswith("%s=%r is not a valid int" % (option.name, value))


def test_d11_11_zero_chunk_size_and_negative_workers_never_reach_the_engine():
    assert "chunk_size=0 is out of range" in refused({"chunk_size": 0}).msg
    assert "workers=-3 is out of range" in refused({"workers": "-3"}).msg
    assert "s3_part_size=0 is out of range" in refused({"s3_part_size": 0}).msg


def test_d11_11_compression_level_bounds_follow_the_codec():
    assert options.resolve({"compression": "zstd", "compression_level": 19},
                           environ={}).compression_level == 19
    assert options.resolve({"compression": "gzip", "compression_level": 9},
                           environ={}).compression_level == 9
    exc = refused({"compression": "gzip", "compression_level": 12})
    assert exc.msg == ("compression_level=12 is out of range for compression=gzip: expected "
                       "an integer from 1 to 9")


# -- forms: cluster, repo_prefix and backup_id on every backend ----------------------------

BAD_NAMES = ["..", "../etc", "a/b", "/abs", ".hidden", "a\\b", "a\nb", "a\tb", "", "a b", "a\n",
             "x" * 129]


@pytest.mark.parametrize("value", BAD_NAMES)
@pytest.mark.parametrize("repo_type", ["s3", "posix"])
def test_d11_11_cluster_name_is_one_safe_segment(value, repo_type):
    exc = refused({"cluster": value, "repo_type": repo_type})
    assert exc.msg.startswith("cluster=%r is not a valid cluster name: expected letters, "
                              "digits" % value)


@pytest.mark.parametrize("value", BAD_NAMES)
def test_d11_11_backup_id_is_latest_or_one_safe_segment(value):
    exc = refused({"backup_id": value})
    assert exc.msg.startswith("backup_id=%r is not a backup id: expected latest or an id" % value)


@pytest.mark.parametrize("value", ["latest", "20261124T060012Z-full", "20261124T060012Z-incr"])
def test_d11_11_backup_ids_accepted(value):
    assert options.resolve({"backup_id": value}, environ={}).backup_id == value


@pytest.mark.parametrize("value", ["..", "../x", "dr/../x", "/dr", "dr//x", "dr/./x", "a\\b",
                                   "dr\n", "dr\x00x", "/", "x" * 513])
def test_d11_11_repo_prefix_is_a_relative_key_prefix(value):
    exc = refused({"repo_prefix": value})
    assert exc.msg.startswith("repo_prefix=%r is not a key prefix: expected segments" % value)


@pytest.mark.parametrize("value", ["", "dr", "dr/", "dr/site-a", "a.b/c_d"])
def test_d11_11_repo_prefixes_accepted(value):
    assert options.resolve({"repo_prefix": value}, environ={}).repo_prefix == value


# -- settings written into postgresql.auto.conf ------------------------------------------

@pytest.mark.parametrize("text,fragment", [
    ({"port": "5432\nshared_preload_libraries='evil'"}, "has a control character in its value"),
    ({"work_mem": "64MB\r"}, "has a control character in its value"),
    ({"application_name": "a\x1bb"}, "has a control character in its value"),
    ({"application_name": "a\\"}, "has a backslash in its value"),
    ({"log_line_prefix": "a\\nb"}, "has a backslash in its value"),
    ({"work mem": "1"}, "has no valid setting name"),
    ({"1port": "1"}, "has no valid setting name"),
    ({"port\n": "1"}, "has no valid setting name"),
    ({"max_connections": "10\n"}, "has a control character in its value"),
    ({"a.b.c": "1"}, "has no valid setting name"),
    ({"": "1"}, "has no valid setting name"),
    ("=5", "has no valid setting name"),
    ("max_connections=abc", "expected a non-negative integer for max_connections"),
    ("max_connections=-1", "expected a non-negative integer for max_connections"),
    ("max_wal_senders=1.5", "expected a non-negative integer for max_wal_senders"),
    ("max_locks_per_transaction=", "expected a non-negative integer"),
    ("max_prepared_transactions=1e3", "expected a non-negative integer"),
    ("max_worker_processes=99999999999", "expected a non-negative integer"),
])
def test_d11_11_settings_postgresql_would_refuse(text, fragment):
    exc = refused({"settings": text})
    assert exc.msg.startswith("settings=")
    assert fragment in exc.msg
    assert exc.details["option"] == "settings"


def test_d11_11_settings_name_the_bad_value():
    exc = refused({"settings": "port=5433,max_connections=abc"})
    assert exc.msg == ("settings='max_connections=abc' is not valid: expected a "
                       "non-negative integer for max_connections")


def test_d11_11_settings_accepted():
    given = {"port": "5433", "max_connections": "200", "pg_stat_statements.max": "100",
             "unix_socket_directories": "/tmp/x y", "search_path": "'$user', public"}
    assert options.resolve({"settings": given}, environ={}).settings == given


def test_d11_11_tablespace_map_and_timeline():
    assert "tablespace_map='ts=/a\\nb' is not valid" in refused(
        {"tablespace_map": {"ts": "/a\nb"}}).msg
    assert "tablespace_map='ts=' is not valid" in refused({"tablespace_map": "ts="}).msg
    assert "target_timeline='abc' is not a timeline" in refused({"target_timeline": "abc"}).msg
    assert "target_timeline='0' is not a timeline" in refused({"target_timeline": "0"}).msg
    for good in ("latest", "current", "3"):
        assert options.resolve({"target_timeline": good}, environ={}).target_timeline == good


def test_d11_11_endpoint_and_bucket_forms():
    assert "is not an endpoint URL" in refused({"s3_endpoint": "127.0.0.1:8333"}).msg
    assert "is not an endpoint URL" in refused({"s3_endpoint": "https://"}).msg
    assert "is not an endpoint URL" in refused({"s3_endpoint": "https://h\n"}).msg
    assert "is not a timeline" in refused({"target_timeline": "2\n"}).msg
    assert "is not a bucket name" in refused({"s3_bucket": "a/b"}).msg
    assert "is not a bucket name" in refused({"s3_bucket": "../b"}).msg
    s = options.resolve({"s3_endpoint": "https://127.0.0.1:8333", "s3_bucket": "t-1a"},
                        environ={})
    assert s.s3_endpoint == "https://127.0.0.1:8333" and s.s3_bucket == "t-1a"
    s = options.resolve({"s3_endpoint": "", "s3_bucket": ""}, environ={})  # "" is unset
    assert s.s3_endpoint == "" and s.s3_bucket == ""


@pytest.mark.parametrize("option", LINES, ids=lambda o: o.name)
def test_d11_11_every_text_option_refuses_control_characters(option):
    exc = refused({option.name: "a\nb"})
    assert exc.details["option"] == option.name
    assert exc.msg.startswith(option.name + "=")


def test_d11_11_multiline_json_rules_are_allowed():
    rules = '[\n\t{"ID": "x"}\n]'
    assert options.resolve({"lifecycle_rules": rules}, environ={}).lifecycle_rules == rules
    assert "control character" in refused({"lifecycle_rules": "[]\x00"}).msg


@pytest.mark.parametrize("option", [o for o in options.OPTIONS if o.secret],
                         ids=lambda o: o.name)
def test_d11_11_a_bad_secret_is_never_shown(option):
    exc = refused({option.name: "sekret-value\n"})
    assert "sekret" not in exc.msg and "'********'" in exc.msg


def test_d11_11_config_file_values_meet_their_declaration(tmp_path):
    config = tmp_path / "pgdr.conf"
    config.write_text("[pgdr]\nchunk_size = 0\n")
    with pytest.raises(ConfigError) as info:
        options.resolve(config_file=str(config), environ={})
    assert info.value.msg.startswith("chunk_size=0 is out of range")
    assert info.value.details["option"] == "chunk_size"


# -- the command line: every verb, unknown option, wrong type, missing option --------------

def run_cli(argv, tmp_path):
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv) + ["--config", str(empty), "--credentials", str(empty)],
                   out, err, environ={})
    return code, out.getvalue(), err.getvalue()


def expected_exit(verb):
    # restore_command's contract (docs/cli.md): anything but 'not in the archive' is > 125
    return cli.WAL_FETCH_FATAL_BASE + 2 if verb == "wal-fetch" else 2


def one_line(verb, err, code):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    match = re.match(r"^pgdr %s: error \[(%s)\]: (.+)$" % (re.escape(verb), code), lines[0])
    assert match, lines[0]
    return match.group(2)


def positionals(verb):
    return {"wal-push": ["/nonexistent/000000010000000000000001"],
            "wal-fetch": ["000000010000000000000001", "/nonexistent/x"],
            "restore-stage": ["read"]}.get(verb, [])


def int_option(verb):
    groups = set(cli.COMMANDS[verb][1])
    return next(o for o in INTS if set(o.groups) & groups)


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_d11_11_unknown_option_one_line_exit_2(verb, tmp_path):
    code, out, err = run_cli([verb, "--no-such-option", "1"] + positionals(verb), tmp_path)
    message = one_line(verb, err, "usage_invalid")
    assert "--no-such-option" in message
    assert code == expected_exit(verb)


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_d11_11_wrong_type_one_line_exit_2(verb, tmp_path):
    option = int_option(verb)
    code, out, err = run_cli([verb, option.flag, "lots"] + positionals(verb), tmp_path)
    assert one_line(verb, err, "config_invalid") == "%s='lots' is not a valid int" % option.name
    assert code == expected_exit(verb)


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_d11_11_out_of_range_one_line_exit_2_with_json(verb, tmp_path):
    option = int_option(verb)
    code, out, err = run_cli([verb, "--json", option.flag, str(option.maximum + 1)]
                             + positionals(verb), tmp_path)
    message = one_line(verb, err, "config_invalid")
    assert message.startswith("%s=%d is out of range" % (option.name, option.maximum + 1))
    assert code == expected_exit(verb)
    assert '"failed": true' in out and '"option": "%s"' % option.name in out


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_d11_11_missing_value_one_line_exit_2(verb, tmp_path):
    code, out, err = run_cli([verb] + positionals(verb) + ["--cluster"], tmp_path)
    message = one_line(verb, err, "usage_invalid")
    assert "--cluster" in message and "expected one argument" in message
    assert code == expected_exit(verb)


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_d11_11_missing_required_option_one_line_exit_2(verb, tmp_path):
    code, out, err = run_cli([verb] + positionals(verb), tmp_path)
    message = one_line(verb, err, "config_missing")
    # a staged restore's stage reads its state file first (read and cutover need no cluster)
    first = {"restore-stage": ("state_file, target", "--state-file, --target")}
    names, flags = first.get(verb, ("cluster", "--cluster"))
    assert message.startswith("missing required setting(s): " + names)
    assert flags in message
    assert code == expected_exit(verb)


@pytest.mark.parametrize("verb", sorted(v for v in cli.COMMANDS if v in verbs.POSITIONAL))
def test_d11_11_missing_positional_one_line(verb, tmp_path):
    code, out, err = run_cli([verb, "--cluster", "main"], tmp_path)
    message = one_line(verb, err, "usage_invalid")
    assert "required: " + ", ".join(verbs.POSITIONAL[verb]) in message
    assert code == expected_exit(verb)


def test_d11_11_unknown_verb_one_line(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(["frobnicate"], out, err, environ={})
    assert code == 2
    assert re.match(r"^pgdr: error \[usage_invalid\]: .*'frobnicate'", err.getvalue())
    assert len(err.getvalue().splitlines()) == 1


@pytest.mark.parametrize("text,fragment", [
    (b"[pgdr]\ns3_secret_key sekret-value\n", "line(s) 2: expected 'key = value'"),
    (b"s3_secret_key = sekret-value\n[pgdr]\n", "line 1: text before the [pgdr] section header"),
    (b"[pgdr]\ns3_secret_key = sekret-value\ns3_secret_key = sekret-value\n",
     "line 3: key s3_secret_key given twice"),
    (b"[pgdr]\n[pgdr]\n", "line 2: section [pgdr] given twice"),
    (b"[pgdr]\ns3_secret_key = sekret-value\xff\n", "not UTF-8 text"),
])
def test_d11_11_unreadable_config_file_one_line_without_its_text(text, fragment, tmp_path):
    """configparser's messages span lines and quote the bad line: a credentials file's
    secret would be printed."""
    path = tmp_path / "credentials"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        options.resolve(credentials_file=str(path), environ={})
    msg = info.value.msg
    assert msg == "cannot read config file %s: %s" % (path, fragment) or fragment in msg, msg
    assert "\n" not in msg and "sekret" not in msg
    assert info.value.exit_code == 2


def test_engine_options_filter_gives_each_module_what_it_takes():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.pgdr.postgresql.plugins.filter.engine_options import (
        engine_options)
    given = {"s3_ca_bundle": "/etc/ssl/corp.pem", "workers": 8, "drill_port": 7000,
             "compression": "none"}
    assert engine_options(given, "pg_backup") == {
        "s3_ca_bundle": "/etc/ssl/corp.pem", "workers": 8, "compression": "none"}
    assert engine_options(given, "pg_drill") == {
        "s3_ca_bundle": "/etc/ssl/corp.pem", "workers": 8, "drill_port": 7000}
    assert engine_options(given, "node") == given
    unknown = "s3_ca_bundel is not an engine option: did you mean s3_ca_bundle"
    with pytest.raises(AnsibleFilterError, match=unknown):
        engine_options({"s3_ca_bundel": "/x"}, "pg_backup")
    with pytest.raises(AnsibleFilterError, match="s3_secret_key is a secret"):
        engine_options({"s3_secret_key": "x"}, "node")
    with pytest.raises(AnsibleFilterError, match="not a module"):
        engine_options({}, "pg_nothing")
