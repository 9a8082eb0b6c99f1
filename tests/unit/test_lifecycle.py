"""Lifecycle rules computed from the retention policy, and the validator that refuses
rules which would break it (plugins/module_utils/_pgdr/lifecycle.py); the bucket verb
against moto in-process (check mode, idempotence)."""
import datetime
import json

import pytest

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import lifecycle, options
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.errors import (
    ConfigError, RepositoryError)
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.progress import Progress

P14 = lifecycle.Policy(retention_days=14, full_max_age=7, margin_days=7)  # horizon 28


def by_id(plan):
    return dict((r["ID"], r) for r in plan["rules"])


# -- the horizon ---------------------------------------------------------------------
@pytest.mark.parametrize("days,full,age,margin,expected", [
    (14, None, 7, 7, 28),
    (14, 3, 7, 7, 28),      # days decide; retention_full adds fulls, never removes
    (30, None, 0, 0, 30),
    (1, None, 1, 1, 3),
    (None, 4, 7, 7, None),  # count only: no age bound
    (None, None, 7, 7, None),
    (0, 2, 7, 7, None),     # 0 is "not set"
])
def test_horizon(days, full, age, margin, expected):
    policy = lifecycle.Policy(days, full, age, margin)
    assert policy.horizon == expected
    if expected:
        assert str(expected) in policy.explain()


# -- compiled rules ------------------------------------------------------------------
def test_one_cluster_expires_backups_and_wal_segments_at_the_horizon():
    plan = lifecycle.compile_rules(P14, "", ["main"])
    rules = by_id(plan)
    assert plan["horizon_days"] == 28
    assert rules["pgdr-main-backup"] == {
        "ID": "pgdr-main-backup", "Status": "Enabled", "Filter": {"Prefix": "main/backup/"},
        "Expiration": {"Days": 28}}
    # wal/0: segments and partials (names start with the timeline), not wal/history/
    assert rules["pgdr-main-wal"]["Filter"] == {"Prefix": "main/wal/0"}
    assert rules["pgdr-main-wal"]["Expiration"] == {"Days": 28}
    assert not "main/wal/history/x".startswith(rules["pgdr-main-wal"]["Filter"]["Prefix"])
    assert "main/wal/0000000100000000/000000010000000000000004.zst".startswith("main/wal/0")
    assert rules["pgdr-housekeeping"] == {
        "ID": "pgdr-housekeeping", "Status": "Enabled", "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
        "Expiration": {"ExpiredObjectDeleteMarker": True}}
    assert list(rules) == ["pgdr-main-backup", "pgdr-main-wal", "pgdr-housekeeping"]


def test_repo_prefix_and_many_clusters():
    plan = lifecycle.compile_rules(P14, "/dr/eu/", "main, reporting,main")
    rules = by_id(plan)
    assert sorted(rules) == ["pgdr-housekeeping", "pgdr-main-backup", "pgdr-main-wal",
                             "pgdr-reporting-backup", "pgdr-reporting-wal"]
    assert rules["pgdr-reporting-backup"]["Filter"]["Prefix"] == "dr/eu/reporting/backup/"
    assert rules["pgdr-reporting-wal"]["Filter"]["Prefix"] == "dr/eu/reporting/wal/0"
    assert rules["pgdr-housekeeping"]["Filter"]["Prefix"] == "dr/eu/"


def test_no_expiry_is_ever_sooner_than_retention_plus_chain_allowance():
    for days in (1, 7, 14, 35, 90):
        for age in (0, 1, 7, 14):
            for margin in (0, 3, 7):
                plan = lifecycle.compile_rules(lifecycle.Policy(days, None, age, margin),
                                               "", ["c"])
                for rule in plan["rules"]:
                    expiry = rule.get("Expiration", {}).get("Days")
                    if expiry is not None:
                        assert expiry >= days + age + margin


def test_retention_full_only_writes_no_expiry_and_says_why():
    plan = lifecycle.compile_rules(lifecycle.Policy(None, 3, 7, 7), "", ["main"])
    assert plan["horizon_days"] is None
    assert all("Days" not in r.get("Expiration", {}) for r in plan["rules"])
    assert [r["ID"] for r in plan["rules"]] == ["pgdr-housekeeping"]
    assert "retention_full=3 alone gives no age bound" in plan["notes"][0]
    assert "pgdr expire" in plan["notes"][0]


def test_no_policy_at_all_writes_no_expiry():
    plan = lifecycle.compile_rules(lifecycle.Policy(), "", ["main"])
    assert "no retention policy" in plan["notes"][0]
    assert [r["ID"] for r in plan["rules"]] == ["pgdr-housekeeping"]


def test_without_clusters_no_expiry_even_with_days():
    plan = lifecycle.compile_rules(P14, "dr", [])
    assert [r["ID"] for r in plan["rules"]] == ["pgdr-housekeeping"]
    assert any("without cluster names" in n for n in plan["notes"])
    assert plan["rules"][0]["Filter"] == {"Prefix": "dr/"}


def test_transitions_per_kind_before_the_horizon():
    plan = lifecycle.compile_rules(lifecycle.Policy(60, None, 7, 7), "", ["main"],
                                   backup_transition=(30, "STANDARD_IA"),
                                   wal_transition=(5, "GLACIER_IR"))
    rules = by_id(plan)
    assert rules["pgdr-main-backup"]["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
    assert rules["pgdr-main-wal"]["Transitions"] == [{"Days": 5, "StorageClass": "GLACIER_IR"}]
    assert rules["pgdr-main-backup"]["Expiration"] == {"Days": 74}


def test_transitions_without_expiry_still_written():
    plan = lifecycle.compile_rules(lifecycle.Policy(None, 2), "", ["main"],
                                   backup_transition=(0, "INTELLIGENT_TIERING"))
    rules = by_id(plan)
    assert rules["pgdr-main-backup"] == {
        "ID": "pgdr-main-backup", "Status": "Enabled", "Filter": {"Prefix": "main/backup/"},
        "Transitions": [{"Days": 0, "StorageClass": "INTELLIGENT_TIERING"}]}
    assert "pgdr-main-wal" not in rules  # nothing to do for WAL: no empty rule


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archive_classes_refused_for_computed_transitions(storage_class):
    with pytest.raises(ConfigError) as err:
        lifecycle.compile_rules(P14, "", ["main"], backup_transition=(10, storage_class))
    assert "unreadable without a thaw" in err.value.msg
    assert err.value.details["option"] == "lifecycle_backup_storage_class"


def test_unknown_class_refused():
    with pytest.raises(ConfigError, match="is not one of"):
        lifecycle.compile_rules(P14, "", ["main"], wal_transition=(10, "REDUCED_REDUNDANCY"))


def test_infrequent_access_needs_30_days():
    with pytest.raises(ConfigError, match="only after at least 30 days"):
        lifecycle.compile_rules(lifecycle.Policy(60), "", ["m"], backup_transition=(10, "STANDARD_IA"))
    lifecycle.compile_rules(lifecycle.Policy(60), "", ["m"], backup_transition=(10, "GLACIER_IR"))


def test_transition_at_or_after_expiry_refused():
    with pytest.raises(ConfigError, match="not before the expiry at 28 days"):
        lifecycle.compile_rules(P14, "", ["m"], wal_transition=(28, "GLACIER_IR"))


def test_different_transitions_need_clusters():
    with pytest.raises(ConfigError, match="need cluster names"):
        lifecycle.compile_rules(P14, "dr", [], backup_transition=(10, "GLACIER_IR"),
                                wal_transition=(10, "INTELLIGENT_TIERING"))
    plan = lifecycle.compile_rules(P14, "dr", [], backup_transition=(10, "GLACIER_IR"),
                                   wal_transition=(10, "GLACIER_IR"))
    assert by_id(plan)["pgdr-data-transition"]["Filter"] == {"Prefix": "dr/"}


def test_housekeeping_parts_can_be_turned_off():
    plan = lifecycle.compile_rules(P14, "", ["m"], abort_multipart_days=0, noncurrent_days=0,
                                   expired_delete_markers=False)
    assert [r["ID"] for r in plan["rules"]] == ["pgdr-m-backup", "pgdr-m-wal"]
    plan = lifecycle.compile_rules(P14, "", ["m"], abort_multipart_days=1, noncurrent_days=0,
                                   expired_delete_markers=False)
    assert by_id(plan)["pgdr-housekeeping"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


# -- which prefixes reach the repository -------------------------------------------------
@pytest.mark.parametrize("prefix,repo_prefix,touches", [
    ("", "", True),
    ("main", "", True),
    ("main/", "", True),
    ("main/backup/", "", True),
    ("main/backup/2026", "", True),
    ("main/ba", "", True),
    ("main/wal/", "", True),
    ("main/wal/history/", "", True),
    ("main/uploads/", "", False),
    ("main/backups-old/", "", False),
    ("scratch/tmp/", "", False),
    ("d", "dr", True),           # broader than the repository prefix
    ("dr/", "dr", True),
    ("dr/main/backup/", "dr", True),
    ("dr/main/etc/", "dr", False),
    ("other/main/backup/", "dr", False),
    ("drx/main/backup/", "dr", False),
])
def test_touches_repository(prefix, repo_prefix, touches):
    assert lifecycle.touches_repository(prefix, repo_prefix) is touches


@pytest.mark.parametrize("prefix,touches", [
    ("logs/", False),          # not a known cluster
    ("main/", True),
    ("ma", True),              # could be the start of main/
    ("lo", False),
    ("logs/backup/", True),    # a backup/ directory whatever the cluster's name
    ("main/configs/", False),
])
def test_touches_repository_with_known_clusters(prefix, touches):
    assert lifecycle.touches_repository(prefix, "", ["main", "reporting"]) is touches


# -- validation of user rules ------------------------------------------------------------
def rule(rule_id, prefix, **actions):
    return dict({"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": prefix}}, **actions)


def refused(rules, policy=P14, repo_prefix=""):
    with pytest.raises(ConfigError) as err:
        lifecycle.validate(rules, policy, repo_prefix)
    assert err.value.code == "lifecycle_rule_unsafe"
    return err.value


def test_expiry_before_horizon_refused_with_rule_named():
    err = refused([rule("short-backups", "main/backup/", Expiration={"Days": 10})])
    assert "rule 'short-backups'" in err.msg
    assert "Expiration after 10 days deletes keys under 'main/backup/'" in err.msg
    assert "28 days = retention_days 14 + full_max_age 7 + margin 7" in err.msg
    assert len(err.details["problems"]) == 1


def test_expiry_at_or_after_horizon_accepted():
    lifecycle.validate([rule("long", "main/backup/", Expiration={"Days": 28}),
                        rule("longer", "", Expiration={"Days": 400})], P14, "")


def test_whole_bucket_expiry_refused():
    err = refused([{"ID": "everything", "Status": "Enabled", "Filter": {},
                    "Expiration": {"Days": 7}}])
    assert "every key of the bucket" in err.msg


def test_legacy_prefix_field_checked_too():
    refused([{"ID": "legacy", "Status": "Enabled", "Prefix": "main/wal/",
              "Expiration": {"Days": 3}}])


def test_and_filter_with_tags_is_not_a_way_around():
    err = refused([{"ID": "tagged", "Status": "Enabled",
                    "Filter": {"And": {"Prefix": "main/", "Tags": [{"Key": "k", "Value": "v"}]}},
                    "Expiration": {"Days": 1}}])
    assert "'tagged'" in err.msg


def test_expiration_date_refused_even_far_away():
    err = refused([rule("date", "main/", Expiration={"Date": datetime.datetime(2099, 1, 1)})])
    assert "Expiration Date" in err.msg


def test_any_expiry_refused_without_an_age_bound():
    err = refused([rule("year", "main/backup/", Expiration={"Days": 365})],
                  policy=lifecycle.Policy(None, 2))
    assert "cannot bound the age" in err.msg
    assert "retention_full=2" in err.msg


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archive_transition_before_horizon_refused(storage_class):
    err = refused([rule("cold", "main/wal/", Transitions=[{"Days": 20, "StorageClass": storage_class}])])
    assert "Transition to %s after 20 days" % storage_class in err.msg
    assert "unreadable without a thaw" in err.msg


def test_archive_transition_after_horizon_and_instant_classes_accepted():
    lifecycle.validate([
        rule("cold-late", "main/backup/", Transitions=[{"Days": 60, "StorageClass": "DEEP_ARCHIVE"}]),
        rule("ia", "main/backup/", Transitions=[{"Days": 30, "StorageClass": "STANDARD_IA"}]),
        rule("ir", "main/", Transitions=[{"Days": 1, "StorageClass": "GLACIER_IR"}]),
    ], P14, "")


def test_harmless_actions_accepted_on_the_repository():
    lifecycle.validate([
        rule("nc", "main/", NoncurrentVersionExpiration={"NoncurrentDays": 1}),
        rule("ncg", "", NoncurrentVersionTransitions=[{"NoncurrentDays": 1, "StorageClass": "GLACIER"}]),
        rule("mpu", "", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1}),
        rule("markers", "", Expiration={"ExpiredObjectDeleteMarker": True}),
    ], P14, "")


def test_disabled_rules_and_other_prefixes_accepted():
    lifecycle.validate([
        dict(rule("off", "main/backup/", Expiration={"Days": 1}), Status="Disabled"),
        rule("scratch", "scratch/", Expiration={"Days": 1}),
        rule("uploads", "main/configs/", Expiration={"Days": 1}),
        rule("elsewhere", "other/main/backup/", Expiration={"Days": 1}),
    ], P14, "dr")


def test_several_problems_reported_together():
    err = refused([rule("a", "main/backup/", Expiration={"Days": 1}),
                   rule("b", "main/wal/", Transitions=[{"Days": 2, "StorageClass": "GLACIER"}]),
                   rule("c", "main/fine/", Expiration={"Days": 1})])
    assert len(err.details["problems"]) == 2
    assert "rule 'a'" in err.msg and "rule 'b'" in err.msg and "rule 'c'" not in err.msg


def test_reserved_missing_and_duplicate_ids():
    err = refused([rule("pgdr-main-backup", "x/", Expiration={"Days": 1}),
                   {"Status": "Enabled", "Filter": {"Prefix": "y/"}},
                   rule("twice", "z/"), rule("twice", "z/")])
    text = err.msg
    assert "pgdr's own rules" in text and "has no ID" in text and "appears twice" in text


def test_parse_rules_from_json_and_errors():
    assert lifecycle.parse_rules(None) == []
    assert lifecycle.parse_rules("") == []
    assert lifecycle.parse_rules('[{"ID": "x"}]') == [{"ID": "x"}]
    with pytest.raises(ConfigError, match="not valid JSON"):
        lifecycle.parse_rules("[{")
    with pytest.raises(ConfigError, match="must be a list"):
        lifecycle.parse_rules('{"ID": "x"}')


# -- comparing and merging -----------------------------------------------------------------
def test_normalize_makes_server_answers_compare_equal():
    sent = {"ID": "a", "Status": "Enabled", "Prefix": "x/", "Expiration": {"Date": datetime.date(2020, 1, 1)},
            "Transitions": [{"Days": 90, "StorageClass": "GLACIER_IR"}, {"Days": 30, "StorageClass": "STANDARD_IA"}]}
    back = {"ID": "a", "Status": "Enabled", "Filter": {"Prefix": "x/"},
            "Expiration": {"Date": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)},
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": "GLACIER_IR"}],
            "NoncurrentVersionTransitions": []}
    assert lifecycle.normalize(sent) == lifecycle.normalize(back)
    assert lifecycle.normalize({"ID": "b", "Filter": {}})["Filter"] == {"Prefix": ""}


def test_diff():
    current = [rule("a", "a/", Expiration={"Days": 1}), rule("b", "b/", Expiration={"Days": 1}),
               rule("c", "c/", Expiration={"Days": 1})]
    desired = [rule("a", "a/", Expiration={"Days": 1}), rule("b", "b/", Expiration={"Days": 2}),
               rule("d", "d/", Expiration={"Days": 1})]
    difference = lifecycle.diff(current, desired)
    assert difference == {"added": ["d"], "removed": ["c"], "changed": ["b"], "unchanged": ["a"]}
    assert lifecycle.has_changes(difference)
    assert not lifecycle.has_changes(lifecycle.diff(desired, list(reversed(desired))))


def test_desired_keeps_foreign_rules_checks_them_and_purges_on_request():
    computed = lifecycle.compile_rules(P14, "", ["main"])["rules"]
    foreign_ok = rule("logs", "logs/", Expiration={"Days": 3})
    stale_mine = rule("pgdr-old-backup", "old/backup/", Expiration={"Days": 28})
    rules, kept = lifecycle.desired_rules(computed, [], [foreign_ok, stale_mine], P14, "", ["main"])
    assert kept == ["logs"]
    assert [r["ID"] for r in rules] == [r["ID"] for r in computed] + ["logs"]
    foreign_bad = rule("legacy-cleanup", "main/", Expiration={"Days": 5})
    with pytest.raises(ConfigError) as err:
        lifecycle.desired_rules(computed, [], [foreign_bad], P14, "", ["main"])
    assert "'legacy-cleanup'" in err.value.msg and "lifecycle_purge" in err.value.msg
    rules, kept = lifecycle.desired_rules(computed, [], [foreign_bad], P14, "", ["main"], purge=True)
    assert kept == [] and "legacy-cleanup" not in [r["ID"] for r in rules]


def test_extra_rule_replaces_a_foreign_rule_of_the_same_id():
    extra = [rule("logs", "logs/", Expiration={"Days": 9})]
    rules, kept = lifecycle.desired_rules([], extra, [rule("logs", "logs/", Expiration={"Days": 3})], P14, "",
                                          ["main"])
    assert kept == [] and rules == extra


# -- the bucket verb, against moto in-process ------------------------------------------------
def settings(**values):
    base = dict(s3_bucket="pgdr-unit", s3_region="us-east-1", s3_access_key="testing",
                s3_secret_key="testing", s3_max_attempts=1, cluster="main", retention_days=14)
    base.update(values)
    return options.resolve(explicit=base, environ={})


@pytest.fixture
def aws():
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        yield


def test_bucket_check_mode_predicts_then_run_applies_then_nothing_changes(aws):
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import bucket
    wanted = settings(lifecycle_backup_transition_days=10, lifecycle_backup_storage_class="GLACIER_IR",
                      bucket_tls_only="required",
                      bucket_public_access_block="required")
    predicted = bucket.run(wanted, Progress(), dry_run=True)
    assert predicted["changed"] and predicted["created"]
    assert predicted["lifecycle"]["diff"]["added"] == ["pgdr-housekeeping", "pgdr-main-backup",
                                                       "pgdr-main-wal"]
    applied = bucket.run(wanted, Progress(), dry_run=False)
    assert applied["changes"] == predicted["changes"]
    assert applied["lifecycle"]["rules"] == predicted["lifecycle"]["rules"]
    again = bucket.run(wanted, Progress(), dry_run=True)
    assert not again["changed"], again["changes"]
    assert not bucket.run(wanted, Progress(), dry_run=False)["changed"]
    import boto3
    client = boto3.client("s3", region_name="us-east-1")
    policy = json.loads(client.get_bucket_policy(Bucket="pgdr-unit")["Policy"])
    assert [st["Sid"] for st in policy["Statement"]] == ["pgdr-tls-only"]
    assert client.get_bucket_versioning(Bucket="pgdr-unit")["Status"] == "Enabled"
    # one setting changes: only it is reported
    longer = bucket.run(settings(retention_days=30, lifecycle_backup_transition_days=10,
                                 lifecycle_backup_storage_class="GLACIER_IR",
                                 bucket_tls_only="required", bucket_public_access_block="required"),
                        Progress(), dry_run=False)
    assert longer["lifecycle"]["diff"]["changed"] == ["pgdr-main-backup", "pgdr-main-wal"]
    assert longer["changes"] == ["lifecycle rules: change pgdr-main-backup, pgdr-main-wal"]


def test_bucket_refuses_unsafe_rule_before_writing_anything(aws):
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import bucket
    bad = settings(lifecycle_rules=json.dumps([rule("oops", "main/wal/", Expiration={"Days": 2})]))
    with pytest.raises(ConfigError) as err:
        bucket.run(bad, Progress(), dry_run=False)
    assert "rule 'oops'" in err.value.msg
    import boto3
    assert "pgdr-unit" not in [b["Name"] for b in boto3.client("s3", region_name="us-east-1").list_buckets()["Buckets"]]


def test_object_lock_only_on_a_new_bucket(aws):
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import bucket
    bucket.run(settings(), Progress(), dry_run=False)
    with pytest.raises(RepositoryError) as err:
        bucket.run(settings(bucket_object_lock="governance", bucket_object_lock_days=3),
                   Progress(), dry_run=True)
    assert err.value.code == "object_lock_unavailable"
    locked = settings(s3_bucket="pgdr-locked", bucket_object_lock="compliance", bucket_object_lock_days=3)
    done = bucket.run(locked, Progress(), dry_run=False)
    assert done["settings"]["bucket_object_lock"] == {"Mode": "COMPLIANCE", "Days": 3}
    assert not bucket.run(locked, Progress(), dry_run=False)["changed"]


def test_tls_only_over_http_endpoint(aws):
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr.commands import bucket
    with pytest.raises(ConfigError) as err:
        bucket.run(settings(s3_endpoint="http://127.0.0.1:9", bucket_tls_only="required"),
                   Progress(), dry_run=True)
    assert err.value.code == "tls_required"
