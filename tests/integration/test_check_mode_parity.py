"""Check mode predicts what the real run does: a backup that min_interval would skip is
predicted as skipped (changed false), not as a new backup (issue 13: pg_backup's check
mode returned before the min_interval test); restores and drills predicted as they run."""
from lab.lab import free_port
from tests.integration.pgdr_run import (archiving_cluster, backup_objects, postgres_dir,
                                        restore_args)


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


def _tree(path):
    """Every file under path with its size: what a check-mode run must leave as it was."""
    return sorted((str(p.relative_to(path)), p.stat().st_size)
                  for p in path.rglob("*") if p.is_file()) if path.exists() else None


def test_restore_and_drill_dry_runs_predict_the_real_runs(
        pg_cluster, workdir, seaweed, bucket):
    """pg_restore_chain and pg_drill in check mode (the engine's dry run): the same
    'changed' as the real run, and nothing written; a restore into a target that already
    holds that backup at that point is predicted unchanged, as the real run finds it."""
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    pg.psql("INSERT INTO ticks (k) SELECT generate_series(1, 100)")
    code, backup, err = repo.run("backup")
    assert code == 0, err

    restored, args = restore_args(15, workdir / "restored" / "data")
    target = restored.datadir
    code, predicted, err = repo.run("restore", "--target", target, "--point", "immediate",
                                    "--dry-run", *args)
    assert code == 0 and _tree(target) in (None, []), err
    code, real, err = repo.run("restore", "--target", target, "--point", "immediate", *args)
    assert code == 0, err
    assert predicted["changed"] is real["changed"] is True
    restored_files = _tree(target)
    code, predicted, err = repo.run("restore", "--target", target, "--point", "immediate",
                                    "--dry-run", *args)
    assert code == 0, err
    code, real, err = repo.run("restore", "--target", target, "--point", "immediate", *args)
    assert code == 0, err
    assert predicted["changed"] is real["changed"] is False
    assert _tree(target) == restored_files

    scratch = postgres_dir(workdir / "drill") / "data"
    port = free_port()
    code, predicted, err = repo.run("drill", "--target", scratch, "--drill-port", port,
                                    "--point", backup["backup"]["id"], "--dry-run")
    assert code == 0 and not scratch.exists(), err
    code, real, err = repo.run("drill", "--target", scratch, "--drill-port", port,
                               "--point", backup["backup"]["id"], "--pg-bindir", pg.bindir)
    assert code == 0 and real["success"] is True, err
    assert predicted["changed"] is real["changed"] is True
    assert predicted["point"] == real["point"]
    assert [c["name"] for c in real["checks"]][:5] == [
        "target reached", "connections", "databases", "database connections", "amcheck"]
