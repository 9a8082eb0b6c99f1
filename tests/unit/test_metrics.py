"""The node's Prometheus textfile (issue 12, item 5): every series with HELP, TYPE, units in
its name and a cluster label; each writer changes its own series and keeps the others; a
backup's or expiry's failure is recorded and survives the next pgdr metrics run; writing
metrics never fails the operation; the drill uses the same writer; wal-push's per-segment
path does not import the module."""
import os
import re
import subprocess
import sys

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli, metrics
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import (
    backup, drill, expire)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import (
    metrics as metrics_command)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import PgdrError
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import resolve
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress


COLLECTIONS_ROOT = metrics.__file__.split(os.sep + "ansible_collections" + os.sep, maxsplit=1)[0]
UNITS = ("_seconds", "_bytes", "_total", "_segments", "_info", "_met", "_up", "_success")


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "textfile").mkdir()
    return resolve({"repo_type": "posix", "repo_path": str(tmp_path / "repo"),
                    "cluster": "main", "pg_host": "127.0.0.1", "pg_port": 1,
                    "metrics_textfile_dir": str(tmp_path / "textfile"),
                    "rpo_objective": 300, "retention_full": 1}, environ={})


def _text(settings):
    with open(metrics.textfile_path(settings)) as handle:
        return handle.read()


def _well_formed(text):
    """Every sample follows its family's HELP and TYPE, has a unit in its name and the
    cluster label."""
    seen = set()
    for line in text.splitlines():
        kind = re.match(r"^# (HELP|TYPE) (\S+) ", line)
        if kind:
            seen.add((kind.group(1), kind.group(2)))
            continue
        name = line.split("{")[0]
        assert ("HELP", name) in seen and ("TYPE", name) in seen, line
        assert name.endswith(UNITS), name
        assert 'cluster="main"' in line, line


def test_every_declared_family_has_help_type_and_a_unit():
    for name, (kind, text) in metrics.FAMILIES.items():
        assert kind in ("gauge", "counter") and text.endswith("."), name
        assert name.startswith("pgdr_") and name.endswith(UNITS), name
        assert (kind == "counter") == name.endswith("_total"), name


def test_render_parse_round_trip_and_replace():
    samples = metrics.Samples("main")
    samples.set("pgdr_backup_last_failure_info", 1, replace=("type",), code="a", type="full",
                exit_code=3)
    samples.set("pgdr_backup_last_failure_info", 1, replace=("type",), code="b", type="full",
                exit_code=4)
    samples.set("pgdr_backup_last_failure_info", 1, replace=("type",), code="c", type="diff",
                exit_code=4)
    samples.set("pgdr_archive_last_segment_info", 1, replace=("cluster",),
                segment='odd"name\\')
    text = samples.render().decode()
    _well_formed(text)
    assert 'code="a"' not in text and 'code="b"' in text and 'code="c"' in text
    assert metrics.Samples("main").parse(text).render().decode() == text
    with pytest.raises(KeyError):
        samples.set("pgdr_undeclared_seconds", 1)


def test_backup_failure_is_recorded_and_survives_the_metrics_run(settings):
    with pytest.raises(PgdrError) as failed:  # PostgreSQL does not answer (port 1)
        backup.run(settings, Progress())
    text = _text(settings)
    _well_formed(text)
    assert re.search(r'pgdr_backup_last_failure_info\{cluster="main",code="%s",exit_code="%d",'
                     r'type="full"\} 1' % (failed.value.code, failed.value.exit_code), text), text
    assert 'pgdr_backup_last_failure_timestamp_seconds{cluster="main",type="full"}' in text

    result = metrics_command.run(settings)  # repository answers, the server does not
    assert result["repository_up"] is True and result["archive"]["available"] is False
    text = _text(settings)
    _well_formed(text)
    assert 'pgdr_repository_up{cluster="main"} 1' in text
    assert 'pgdr_backup_max_age_seconds{cluster="main"} 93600' in text
    assert 'pgdr_rpo_objective_seconds{cluster="main"} 300' in text
    assert 'pgdr_rpo_objective_met{cluster="main"} 0' in text  # no backup: cannot tell
    assert "code=\"%s\"" % failed.value.code in text  # the failure stays
    assert "pgdr_archive_" not in text  # nothing known about the archive: nothing made up


def test_expire_success_then_repository_down(settings, tmp_path):
    expire.run(settings, Progress())
    assert 'pgdr_expire_last_success_timestamp_seconds{cluster="main"}' in _text(settings)
    gone = settings.replace(repo_path=str(tmp_path / "absent"))
    with pytest.raises(PgdrError):
        expire.run(gone, Progress())
    metrics_command.run(gone)
    text = _text(settings)
    _well_formed(text)
    assert 'pgdr_expire_last_failure_info{cluster="main",code="repository_not_found"' in text
    assert 'pgdr_repository_up{cluster="main"} 0' in text
    assert 'pgdr_expire_last_success_timestamp_seconds{cluster="main"}' in text


def test_archive_batches(settings):
    assert metrics.archive_batch(settings, ["000000010000000000000003",
                                            "000000010000000000000004", "00000002.history"],
                                 False)
    assert metrics.archive_batch(settings, [], True)
    text = _text(settings)
    _well_formed(text)
    assert 'segment="000000010000000000000004"} 1' in text
    values = dict((line.split("{")[0], float(line.split()[-1]))
                  for line in text.splitlines() if not line.startswith("#"))
    assert (values["pgdr_archive_last_failure_timestamp_seconds"]
            >= values["pgdr_archive_last_success_timestamp_seconds"])


def test_writing_metrics_never_fails_the_operation(settings, tmp_path):
    os.mkdir(metrics.textfile_path(settings))  # the file's name taken by a directory
    assert metrics.archive_batch(settings, ["000000010000000000000003"], False) is False
    assert metrics.record(settings.replace(metrics_textfile_dir=str(tmp_path / "no")),
                          lambda s: None) is False
    assert metrics.record(settings.replace(metrics_textfile_dir=""), lambda s: None) is False
    assert not [n for n in os.listdir(settings.metrics_textfile_dir) if ".tmp." in n]


def test_metrics_verb_without_the_directory_is_a_clear_error(settings, tmp_path, capsys):
    missing = str(tmp_path / "none")
    config = tmp_path / "pgdr.conf"
    config.write_text("[pgdr]\nrepo_type = posix\nrepo_path = %s\ncluster = main\n"
                      "metrics_textfile_dir = %s\n" % (settings.repo_path, missing))
    errors = []

    class Err:
        write = errors.append
    code = cli.run(["metrics", "--config", str(config)], sys.stdout, Err, environ={})
    assert code != 0
    assert errors == ["pgdr metrics: error [metrics_dir_missing]: metrics_textfile_dir %s is "
                      "not a directory: install prometheus-node-exporter (its textfile "
                      "directory) or set metrics_textfile_dir\n" % missing]


def test_drill_textfile_uses_the_same_writer():
    report = {"success": True, "rto_seconds": 12.5, "rpo_seconds": 0.0,
              "objectives": {"rto": {"met": True}, "rpo": {"met": False}}}
    text = drill._metrics("molecule", report, 1700000000.4).decode()
    assert 'pgdr_drill_success{cluster="molecule"} 1' in text
    assert re.search(r'pgdr_drill_rto_seconds\{cluster="molecule"\} [0-9.]+', text)
    assert 'pgdr_drill_objective_met{cluster="molecule",objective="rpo"} 0' in text
    assert "# TYPE pgdr_drill_objective_met gauge" in text
    assert 'pgdr_drill_last_timestamp_seconds{cluster="molecule"} 1700000000\n' in text


def test_wal_push_does_not_import_the_metrics_module():
    code = ("import sys; sys.path.insert(0, %r); "
            "import ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.cli as c; "
            "c._command_module('wal-push'); "
            "print(any(m.endswith('_pgdr.metrics') for m in sys.modules))" % COLLECTIONS_ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False", out


def test_a_held_lock_delays_a_writer_a_bounded_time(settings, monkeypatch):
    import fcntl
    monkeypatch.setattr(metrics, "LOCK_WAIT", 0.3)
    lock = os.path.join(settings.metrics_textfile_dir, ".pgdr_main.lock")
    with open(lock, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert metrics._lock(lock, 0.3) is None  # not had within the wait
        assert metrics.expire_done(settings)  # written anyway, unlocked
    handle = metrics._lock(lock)
    assert handle is not None
    handle.close()
    assert 'pgdr_expire_last_success_timestamp_seconds{cluster="main"}' in _text(settings)
