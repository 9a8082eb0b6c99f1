"""Check mode predicts what the real run does: a backup that min_interval would skip is
predicted as skipped (changed false), not as a new backup (issue 13: pg_backup's check
mode returned before the min_interval test)."""
from tests.integration.pgdr_run import archiving_cluster, backup_objects


def test_backup_dry_run_predicts_the_min_interval_skip(pg_cluster, workdir, seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    code, first, err = repo.run("backup")
    assert code == 0 and first["changed"] is True, err

    stored = backup_objects(seaweed, bucket)
    code, predicted, err = repo.run("backup", "--dry-run", "--min-interval", "60")
    assert code == 0, err
    code, real, err = repo.run("backup", "--min-interval", "60")
    assert code == 0, err
    assert (predicted["changed"], predicted.get("skipped")) == (False, True), predicted
    assert (real["changed"], real.get("skipped")) == (False, True), real
    assert predicted["reason"] == real["reason"] and "min_interval" in real["reason"]
    assert backup_objects(seaweed, bucket) == stored  # neither run wrote anything

    # without the interval both say: a new backup
    code, predicted, err = repo.run("backup", "--dry-run", "--min-interval", "0")
    assert code == 0 and predicted["changed"] is True and not predicted.get("skipped"), err
    assert backup_objects(seaweed, bucket) == stored  # check mode wrote nothing
    code, real, err = repo.run("backup", "--min-interval", "0")
    assert code == 0 and real["changed"] is True, err
