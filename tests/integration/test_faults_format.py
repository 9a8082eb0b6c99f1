"""A repository written by a newer pgdr (a manifest of a higher format, sealed as that pgdr
would seal it): this pgdr refuses to restore from it and to back up beside it, with one
clear error naming the format, and writes nothing."""
import hashlib
import json

from tests.integration.pgdr_run import archiving_cluster, backup_objects

FORMAT = 2  # the repository format this pgdr writes (docs/repository-format.md)


def _canonical_digest(manifest):
    """manifest_sha256 as docs/repository-format.md defines it."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _seal_as_newer(seaweed, bucket, backup_id):
    """Rewrite the backup's manifest as format FORMAT + 1, with valid digests (as the
    newer pgdr would have sealed it)."""
    s3 = seaweed.client()
    key = "main/backup/%s/manifest.json" % backup_id
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["format"] == FORMAT
    manifest["format"] = FORMAT + 1
    manifest["manifest_sha256"] = _canonical_digest(manifest)
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"sha256": digest})
    line = ("%s  manifest.json\n" % digest).encode()
    s3.put_object(Bucket=bucket, Key="main/backup/%s/manifest.sha256" % backup_id, Body=line,
                  Metadata={"sha256": hashlib.sha256(line).hexdigest()})


def test_a_newer_repository_format_is_refused_and_nothing_is_written(pg_cluster, workdir,
                                                                     seaweed, bucket):
    pg, repo = archiving_cluster(pg_cluster, workdir, seaweed, bucket)
    code, out, err = repo.run("backup")
    assert code == 0, err
    _seal_as_newer(seaweed, bucket, out["backup"]["id"])
    stored = backup_objects(seaweed, bucket)

    target = workdir / "restored" / "data"
    code, out, err = repo.run("restore", "--target", target)
    assert code == 5 and out["error"]["code"] == "manifest_format", (code, err)
    assert "newer pgdr" in err and "format %d" % (FORMAT + 1) in err, err
    assert not target.exists()

    for kind in ("diff", "full"):
        code, out, err = repo.run("backup", "--type", kind)
        assert code == 5 and out["error"]["code"] == "manifest_format", (kind, code, err)
        assert "upgrade pgdr" in err, err
    assert backup_objects(seaweed, bucket) == stored  # nothing written beside it
