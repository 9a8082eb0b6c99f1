"""The launchers: an engine that cannot be loaded never makes wal-fetch exit 1, which
PostgreSQL reads as 'not in the archive' (recovery would end early and promote)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def broken_checkout(tmp_path):
    """A copy of bin/pgdr beside an engine whose import fails."""
    (tmp_path / "bin").mkdir()
    shutil.copy(REPO / "bin" / "pgdr", tmp_path / "bin" / "pgdr")
    engine = tmp_path / "plugins" / "module_utils" / "_pgdr"
    engine.mkdir(parents=True)
    (engine / "__init__.py").write_text("raise ImportError('half-installed engine')\n")
    return tmp_path / "bin" / "pgdr"


def test_unloadable_engine_is_fatal_for_wal_fetch(tmp_path):
    launcher = broken_checkout(tmp_path)
    env = dict(os.environ, PGDR_PYTHON=sys.executable)
    fetch = subprocess.run(["sh", str(launcher), "wal-fetch", "000000010000000000000001",
                            str(tmp_path / "dest")], capture_output=True, text=True, env=env,
                           check=False)
    assert fetch.returncode == 130, fetch.stderr
    assert "cannot load the engine: half-installed engine" in fetch.stderr
    other = subprocess.run(["sh", str(launcher), "info"], capture_output=True, text=True,
                           env=env, check=False)
    assert other.returncode not in (0, 1) and "cannot load the engine" in other.stderr


def test_agent_launcher_template_guards_the_import():
    text = (REPO / "roles" / "pgdr_agent" / "templates" / "pgdr.sh.j2").read_text()
    guarded = text[text.index("try:"):text.index("sys.exit(code if code is not None")]
    assert "from pgdr.cli import run" in guarded and '130 if "wal-fetch" in args' in guarded
    # the fast path is imported inside the guard too, and only for wal-fetch
    assert "from pgdr.walready import handover" in guarded
    assert 'if args[:1] == ["wal-fetch"]' in guarded


def test_agent_launcher_starts_without_site_packages_but_the_full_way_loads_them():
    """-S: the fast path of wal-fetch needs the standard library only (half the start-up
    time per segment); the full way imports site before the engine, which needs boto3."""
    text = (REPO / "roles" / "pgdr_agent" / "templates" / "pgdr.sh.j2").read_text()
    assert "/bin/python -I -S -c '" in text
    full = text[text.index("    if code is None:"):text.index("from pgdr.cli import run")]
    assert "site.main()" in full


def test_dev_launcher_full_way_finds_the_virtualenvs_packages(tmp_path):
    """bin/pgdr starts with -S too: an S3 command must still find boto3 (an unreachable
    endpoint fails on the connection, never on a missing package)."""
    env = dict(os.environ, PGDR_PYTHON=sys.executable, AWS_MAX_ATTEMPTS="1",
               AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    done = subprocess.run(["sh", str(REPO / "bin" / "pgdr"), "info", "--cluster", "main",
                           "--s3-bucket", "pgdr-none", "--s3-endpoint", "http://127.0.0.1:9"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
                          timeout=120)
    assert done.returncode not in (0, 70), done.stderr
    assert "pgdr" in done.stderr and "boto3" not in done.stderr, done.stderr
    assert "cannot load the engine" not in done.stderr


def test_dev_launcher_is_executable():
    """Tests, benches, restore_command and the lab call bin/pgdr directly."""
    assert os.access(REPO / "bin" / "pgdr", os.X_OK)
