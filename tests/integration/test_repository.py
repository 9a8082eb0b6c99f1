"""A hardened repository whose lifecycle is computed from the retention policy (issue 6):
the role pgdr.postgresql.pgdr_repository (module s3_repository) against SeaweedFS, the rules'
expiry really enforced by a forced lifecycle pass while a retained backup still restores,
and rules with transitions (SeaweedFS: 501) round-tripped through moto's server."""
import datetime
import json
import os
import re
import subprocess
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from lab.lab import REPO
from plugins.module_utils._pgdr import lifecycle, options
from plugins.module_utils._pgdr.commands import bucket as bucket_verb
from plugins.module_utils._pgdr.errors import ConfigError, RepositoryError
from plugins.module_utils._pgdr.progress import Progress
from tests.integration.pgdr_run import Repo, checksums, restore_started

ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"


def https_client(seaweed):
    return boto3.client("s3", endpoint_url=seaweed.https_endpoint, region_name="us-east-1",
                        aws_access_key_id=seaweed.access_key,
                        aws_secret_access_key=seaweed.secret_key, verify=str(seaweed.cert_file),
                        config=Config(s3={"addressing_style": "path"}))


def engine_settings(seaweed, bucket, **values):
    base = dict(s3_bucket=bucket, s3_endpoint=seaweed.endpoint, s3_addressing="path",
                s3_access_key=seaweed.access_key, s3_secret_key=seaweed.secret_key,
                s3_max_attempts=2)
    base.update(values)
    return options.resolve(explicit=base, environ={})


# -- the role, through ansible-playbook ---------------------------------------------------
def run_role(workdir, variables, check=False):
    """ansible-playbook of the role on localhost; (exit code, output, module result)."""
    out_file = workdir / ("result-%s.json" % uuid.uuid4().hex[:8])
    playbook = workdir / "repository.yml"
    playbook.write_text(json.dumps([{
        "name": "Repository", "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "roles": [{"role": "pgdr.postgresql.pgdr_repository"}],
        "post_tasks": [{"name": "Save the result", "check_mode": False,
                        "ansible.builtin.copy": {"content": "{{ pgdr_repository_result | to_json }}",
                                                 "dest": str(out_file), "mode": "0600"}}],
    }]))
    extra = workdir / ("vars-%s.json" % uuid.uuid4().hex[:8])
    extra.write_text(json.dumps(variables))
    os.chmod(extra, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH="%s:%s" % (REPO / ".venv" / "bin", env.get("PATH", "/usr/bin:/bin")))
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook),
           "-e", "@%s" % extra] + (["--check"] if check else [])
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    result = json.loads(out_file.read_text()) if out_file.exists() else None
    return proc.returncode, proc.stdout + proc.stderr, result


@pytest.fixture
def role_vars(seaweed):
    return {
        "pgdr_repository_s3_bucket": "t-role-%s" % uuid.uuid4().hex[:12],
        "pgdr_repository_s3_endpoint": seaweed.https_endpoint,
        "pgdr_repository_s3_ca_bundle": str(seaweed.cert_file),
        "pgdr_repository_s3_addressing": "path",
        "pgdr_repository_s3_access_key": seaweed.access_key,
        "pgdr_repository_s3_secret_key": seaweed.secret_key,
        "pgdr_repository_clusters": ["main", "reporting"],
        "pgdr_repository_retention_days": 14,
        "pgdr_repository_retention_full": 2,
        "pgdr_repository_tls_only": "required",
        "pgdr_repository_extra_rules": [{"ID": "scratch-expiry", "Status": "Enabled",
                                         "Filter": {"Prefix": "scratch/"},
                                         "Expiration": {"Days": 3}}],
    }


def test_role_check_mode_predicts_run_applies_second_run_changes_nothing(seaweed, workdir, role_vars):
    name = role_vars["pgdr_repository_s3_bucket"]
    code, output, predicted = run_role(workdir, role_vars, check=True)
    assert code == 0, output
    assert predicted["changed"] and predicted["created"]
    assert predicted["lifecycle"]["horizon_days"] == 28
    assert predicted["lifecycle"]["diff"]["added"] == [
        "pgdr-housekeeping", "pgdr-main-backup", "pgdr-main-wal", "pgdr-reporting-backup",
        "pgdr-reporting-wal", "scratch-expiry"]
    # check mode wrote nothing: the bucket does not exist
    client = https_client(seaweed)
    assert name not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    # SeaweedFS has no public access block: a warning, predicted by check mode too
    assert predicted["settings"]["bucket_public_access_block"] == "unsupported"
    assert "[WARNING]: bucket_public_access_block: the server at" in output

    code, output, applied = run_role(workdir, role_vars)
    assert code == 0, output
    assert applied["changed"] and applied["created"]
    assert applied["changes"] == predicted["changes"]
    assert applied["lifecycle"]["rules"] == predicted["lifecycle"]["rules"]
    assert applied["settings"]["bucket_public_access_block"] == "unsupported"

    # what the bucket now holds
    assert client.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    sse = client.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
    assert sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    policy = json.loads(client.get_bucket_policy(Bucket=name)["Policy"])
    assert [st["Sid"] for st in policy["Statement"]] == ["pgdr-tls-only"]
    rules = client.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert lifecycle.diff(rules, applied["lifecycle"]["rules"])["unchanged"] == sorted(
        r["ID"] for r in applied["lifecycle"]["rules"])
    by_id = dict((r["ID"], r) for r in rules)
    assert by_id["pgdr-main-backup"]["Expiration"] == {"Days": 28}
    assert by_id["pgdr-reporting-wal"]["Filter"] == {"Prefix": "reporting/wal/0"}
    # the TLS-only policy is enforced: plain HTTP is refused, HTTPS works
    client.put_object(Bucket=name, Key="main/probe", Body=b"x")
    with pytest.raises(Exception) as err:
        seaweed.client().get_object(Bucket=name, Key="main/probe")
    assert "AccessDenied" in str(err.value)

    code, output, again = run_role(workdir, role_vars)
    assert code == 0, output
    assert again["changed"] is False and again["changes"] == []
    assert re.search(r"TASK \[pgdr\.postgresql\.pgdr_repository : Harden the bucket[^\n]*\n(?:\[WARNING\][^\n]*\n)*ok: \[localhost\]",
                     output), output
    code, output, again_check = run_role(workdir, role_vars, check=True)
    assert code == 0 and again_check["changed"] is False, output


def test_role_refuses_a_rule_that_breaks_retention(seaweed, workdir, role_vars):
    role_vars["pgdr_repository_extra_rules"] = [
        {"ID": "wal-cleanup", "Status": "Enabled", "Filter": {"Prefix": "main/wal/"},
         "Expiration": {"Days": 7}}]
    code, output, result = run_role(workdir, role_vars)
    assert code != 0 and result is None
    assert "lifecycle_rule_unsafe" in output
    assert "rule 'wal-cleanup'" in output and "Expiration after 7 days" in output
    assert "28 days = retention_days 14 + full_max_age 7 + margin 7" in output
    # refused before anything was written: no bucket
    assert role_vars["pgdr_repository_s3_bucket"] not in [
        b["Name"] for b in https_client(seaweed).list_buckets()["Buckets"]]


# -- unsupported settings on SeaweedFS --------------------------------------------------------
def test_unsupported_settings_are_named(seaweed, bucket):
    with pytest.raises(RepositoryError) as err:
        bucket_verb.run(engine_settings(seaweed, bucket, bucket_public_access_block="required",
                                        bucket_tls_only="unmanaged"), Progress(), dry_run=True)
    assert err.value.code == "setting_unsupported"
    assert err.value.details["setting"] == "bucket_public_access_block"
    assert "does not support it" in err.value.msg

    with pytest.raises(RepositoryError) as err:
        bucket_verb.run(engine_settings(seaweed, bucket, cluster="main", retention_days=60,
                                        lifecycle_backup_transition_days=30,
                                        bucket_tls_only="unmanaged"), Progress())
    assert err.value.code == "setting_unsupported"
    assert err.value.details["setting"] == "lifecycle_transitions"
    assert "pgdr-main-backup" in err.value.msg and "lifecycle_backup_transition_days" in err.value.msg

    with pytest.raises(ConfigError) as err:  # over http a TLS-only policy would lock pgdr out
        bucket_verb.run(engine_settings(seaweed, bucket, bucket_tls_only="required"), Progress())
    assert err.value.code == "tls_required"

    with pytest.raises(RepositoryError) as err:  # an existing bucket cannot get Object Lock
        bucket_verb.run(engine_settings(seaweed, bucket, bucket_object_lock="compliance",
                                        bucket_object_lock_days=1), Progress())
    assert err.value.code == "object_lock_unavailable"

    # when_supported: warnings, and the rest is applied
    done = bucket_verb.run(engine_settings(seaweed, bucket, cluster="main", retention_days=3),
                           Progress())
    assert done["changed"] and len(done["warnings"]) == 2
    assert done["settings"]["bucket_tls_only"] == "skipped"


def test_object_lock_on_a_new_bucket_is_enforced(seaweed):
    name = "t-lock-%s" % uuid.uuid4().hex[:12]
    settings = engine_settings(seaweed, name, bucket_object_lock="compliance",
                               bucket_object_lock_days=1, cluster="main", retention_days=3)
    done = bucket_verb.run(settings, Progress())
    assert done["created"] and "create bucket %s with Object Lock" % name in done["changes"]
    assert not bucket_verb.run(settings, Progress())["changed"]
    client = seaweed.client()
    version = client.put_object(Bucket=name, Key="main/backup/x", Body=b"x")["VersionId"]
    with pytest.raises(Exception) as err:
        client.delete_object(Bucket=name, Key="main/backup/x", VersionId=version)
    assert "AccessDenied" in str(err.value)


# -- expiry enforced, retained chain intact -------------------------------------------------------
def test_expiry_enforced_while_the_retained_backup_restores(seaweed, bucket, pg_cluster, workdir):
    pg = pg_cluster(15)
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text); "
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    repo = Repo.s3(workdir, seaweed, bucket, pg=pg)
    code, out, err = repo.run("backup")
    assert code == 0, err
    backup_keys = sorted(o["Key"] for o in seaweed.client().list_objects_v2(
        Bucket=bucket, Prefix="main/backup/")["Contents"])

    # expendable objects, beside the repository: an extra rule expires them at once (a date
    # in the past; SeaweedFS counts Days from the object's time, which a test cannot age)
    client = seaweed.client()
    for i in range(5):
        client.put_object(Bucket=bucket, Key="scratch/tmp-%d" % i, Body=b"x" * 100)
    client.put_object(Bucket=bucket, Key="main/configs/keep.conf", Body=b"kept")
    extra = [{"ID": "scratch-now", "Status": "Enabled", "Filter": {"Prefix": "scratch/"},
              "Expiration": {"Date": datetime.datetime(2020, 1, 1).isoformat() + "Z"}}]
    settings = engine_settings(seaweed, bucket, cluster="main", retention_days=1,
                               lifecycle_rules=json.dumps(extra))
    done = bucket_verb.run(settings, Progress())
    assert done["lifecycle"]["horizon_days"] == 15
    assert not bucket_verb.run(settings, Progress())["changed"]

    # the same kind of rule on the repository is refused, naming it
    bad = [dict(extra[0], ID="main-now", Filter={"Prefix": "main/"})]
    with pytest.raises(ConfigError) as err:
        bucket_verb.run(engine_settings(seaweed, bucket, cluster="main", retention_days=1,
                                        lifecycle_rules=json.dumps(bad)), Progress())
    assert "rule 'main-now'" in err.value.msg and "Expiration Date" in err.value.msg

    seaweed.run_lifecycle_pass()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = client.list_objects_v2(Bucket=bucket, Prefix="scratch/").get("Contents", [])
        if not left:
            break
        time.sleep(1)
    assert left == [], "scratch objects not expired: %s" % left
    # versioned bucket: expired objects became delete markers
    markers = client.list_object_versions(Bucket=bucket, Prefix="scratch/").get("DeleteMarkers", [])
    assert len(markers) == 5
    # every object of the retained backup is still there, and it restores
    assert sorted(o["Key"] for o in client.list_objects_v2(
        Bucket=bucket, Prefix="main/backup/")["Contents"]) == backup_keys
    assert client.get_object(Bucket=bucket, Key="main/configs/keep.conf")["Body"].read() == b"kept"
    restored = restore_started(repo, 15, workdir / "restored" / "data")
    try:
        assert checksums(restored) == checksums(pg)
    finally:
        restored.stop()


# -- transitions round-trip through moto's server ------------------------------------------------
def test_transitions_round_trip_on_moto(moto_endpoint):
    extra = [
        {"ID": "cold-after-horizon", "Status": "Enabled", "Filter": {"Prefix": "main/backup/"},
         "Transitions": [{"Days": 200, "StorageClass": "DEEP_ARCHIVE"}]},
        {"ID": "old-versions-cold", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionTransitions": [{"NoncurrentDays": 10, "StorageClass": "GLACIER"}]},
    ]
    settings = options.resolve(explicit=dict(
        s3_bucket="pgdr-moto", s3_endpoint=moto_endpoint, s3_addressing="path",
        s3_access_key="testing", s3_secret_key="testing", s3_max_attempts=2,
        lifecycle_clusters="main,reporting", repo_prefix="dr", retention_days=90,
        lifecycle_backup_transition_days=30, lifecycle_backup_storage_class="STANDARD_IA",
        lifecycle_wal_transition_days=7, lifecycle_wal_storage_class="GLACIER_IR",
        lifecycle_rules=json.dumps(extra), bucket_tls_only="unmanaged"), environ={})
    predicted = bucket_verb.run(settings, Progress(), dry_run=True)
    applied = bucket_verb.run(settings, Progress())
    assert applied["changes"] == predicted["changes"]
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    back = client.get_bucket_lifecycle_configuration(Bucket="pgdr-moto")["Rules"]
    sent = applied["lifecycle"]["rules"]
    assert sorted((lifecycle.normalize(r) for r in back), key=lambda r: r["ID"]) == \
        sorted((lifecycle.normalize(r) for r in sent), key=lambda r: r["ID"])
    by_id = dict((r["ID"], r) for r in back)
    assert by_id["pgdr-main-backup"]["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
    assert by_id["pgdr-reporting-wal"]["Transitions"] == [{"Days": 7, "StorageClass": "GLACIER_IR"}]
    assert by_id["pgdr-reporting-wal"]["Filter"]["Prefix"] == "dr/reporting/wal/0"
    assert by_id["pgdr-main-backup"]["Expiration"]["Days"] == 104
    again = bucket_verb.run(settings, Progress())
    assert again["changed"] is False, again["changes"]
    assert again["lifecycle"]["diff"]["unchanged"] == sorted(r["ID"] for r in sent)
