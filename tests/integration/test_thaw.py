"""Objects in archive storage classes (issue 6): the restore plan finds them before
anything is written, and thaw requests their retrieval and waits. moto stands in for S3
(SeaweedFS has no storage classes)."""
import boto3

from tests.integration.pgdr_run import Repo, checksums, postgres_dir, restore_args


def test_archived_objects_are_found_before_anything_is_written(pg_cluster, moto_endpoint,
                                                               workdir):
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="cold")
    pg = pg_cluster(15)
    pg.psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
    repo = Repo(workdir, repo_type="s3", s3_bucket="cold", s3_endpoint=moto_endpoint,
                s3_addressing="path", s3_access_key="testing", s3_secret_key="testing",
                pg_host="127.0.0.1", pg_port=pg.port, pg_data=pg.datadir)
    code, out, err = repo.run("backup")
    assert code == 0, err
    data = [o["Key"] for o in s3.list_objects_v2(Bucket="cold", Prefix="main/backup/")["Contents"]
            if "/data/" in o["Key"] or "/bundle/" in o["Key"]]
    for key in data:  # what a lifecycle transition to Glacier does
        s3.copy_object(Bucket="cold", Key=key, CopySource={"Bucket": "cold", "Key": key},
                       StorageClass="GLACIER", MetadataDirective="COPY")

    target = postgres_dir(workdir / "restored")
    code, plan, err = repo.run("restore", "--target", target, "--dry-run")
    assert code == 0 and plan["archived_objects"] == len(data), err
    code, out, err = repo.run("restore", "--target", target)
    assert code == 6 and out["error"]["code"] == "objects_archived", err
    assert "GLACIER" in out["error"]["msg"] and "thaw" in out["error"]["msg"]
    assert not list(target.iterdir()), "nothing may be written before the objects are thawed"
    assert all(s3.head_object(Bucket="cold", Key=k).get("Restore") is None for k in data)

    restored, args = restore_args(15, workdir / "thawed" / "data")
    code, out, err = repo.run("restore", "--target", restored.datadir, "--thaw",
                              "--thaw-tier", "Expedited", *args)
    assert code == 0, err
    assert all('ongoing-request="false"' in s3.head_object(Bucket="cold", Key=k)["Restore"]
               for k in data)
    restored.start()
    try:
        assert checksums(restored) == checksums(pg)
    finally:
        restored.stop()
