"""The push worker's health helpers (issue 12, item 2): a persistent failure is logged once
a minute, not once a segment; recovery once; a settings file change changes the
fingerprint."""
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import pushhealth
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.options import Settings


def test_d12_2_failure_logged_once_a_minute_and_recovery_once(tmp_path):
    now = [1000.0]
    lines = []
    log = pushhealth.FailureLog(str(tmp_path), clock=lambda: now[0], write=lines.append)
    for second in range(0, 150, 2):  # a failed batch every 2 s for 150 s
        now[0] = 1000.0 + second
        log.failed([("00000001000000000000000%d" % (second % 10), "bucket 'x' does not exist")])
    assert len(lines) == 3, lines  # at 0, 60 and 120 s
    assert "61 push(es) failed" in lines[-1] and "bucket 'x'" in lines[-1]
    log.succeeded()
    log.succeeded()
    assert len(lines) == 4 and "recovered: 75 push(es)" in lines[-1]
    log.failed([("a", "b")])
    assert len(lines) == 5  # a new failure is logged at once


def test_d12_2_fingerprint_follows_the_files_content(tmp_path):
    config, credentials = tmp_path / "pgdr.conf", tmp_path / "credentials"
    config.write_text("[pgdr]\ns3_bucket = a\n")
    credentials.write_text("[pgdr]\ns3_secret_key = one\n")
    settings = Settings({"config_file": str(config), "credentials_file": str(credentials)})
    first = pushhealth.fingerprint(settings)
    assert pushhealth.fingerprint(settings) == first
    credentials.write_text("[pgdr]\ns3_secret_key = two\n")
    assert pushhealth.fingerprint(settings) != first
    assert "one" not in repr(first)  # digests only, never the secret
    assert pushhealth.fingerprint(Settings({"config_file": None, "credentials_file": None}))
