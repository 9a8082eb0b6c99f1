"""The lab itself works: real PostgreSQL clusters and a real SeaweedFS S3 server."""
import json
import socket
import stat

import pytest
from botocore.exceptions import ClientError

from lab.lab import DRILL_PORT_OFFSET, free_port, load_sample_data


def test_pg15_table_roundtrip(pg_cluster):
    pg = pg_cluster(15)
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
            "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;")
    assert pg.psql("SELECT count(*) FROM t") == "1000"
    assert pg.psql("SHOW wal_level") == "replica"
    assert pg.psql("SHOW listen_addresses") == "127.0.0.1"
    assert pg.psql("SHOW server_version_num").startswith("15")


def test_psql_error_raises_with_stderr(pg_cluster):
    pg = pg_cluster(15)
    with pytest.raises(RuntimeError, match="does_not_exist"):
        pg.psql("SELECT * FROM does_not_exist")


def test_sample_data(pg_cluster):
    pg = pg_cluster(15, settings={"shared_buffers": "32MB"})
    load_sample_data(pg)
    assert pg.psql("SELECT count(*) FROM customers", db="shop") == "2000"
    assert int(pg.psql("SELECT count(*) FROM order_totals", db="shop")) > 0
    assert pg.psql("SELECT count(*) FROM contacts", db="crm") == "1000"
    assert pg.psql("SHOW shared_buffers") == "32MB"


@pytest.mark.pg18
def test_pg18_starts(pg_cluster):
    pg = pg_cluster(18)
    assert pg.psql("SHOW server_version_num").startswith("18")
    assert pg.psql("SHOW summarize_wal") in ("on", "off")  # incremental backup support


def test_seaweed_put_get_roundtrip(seaweed, bucket):
    s3 = seaweed.client()
    body = b"pgdr" * 10000
    s3.put_object(Bucket=bucket, Key="dir/obj", Body=body)
    assert s3.get_object(Bucket=bucket, Key="dir/obj")["Body"].read() == body
    assert seaweed.usage(bucket, "dir/") == (len(body), 1)
    assert seaweed.usage(bucket, "other/") == (0, 0)


def test_missing_bucket_is_an_error(seaweed):
    # -s3.autoCreateBucket=false: writing to a missing bucket must not create it
    with pytest.raises(ClientError) as err:
        seaweed.client().put_object(Bucket="no-such-bucket-here", Key="k", Body=b"x")
    assert err.value.response["Error"]["Code"] == "NoSuchBucket"


def test_seaweed_https_and_secret_file_mode(seaweed):
    import boto3
    from botocore.config import Config
    assert seaweed.https_endpoint.startswith("https://127.0.0.1:")
    s3 = boto3.client("s3", endpoint_url=seaweed.https_endpoint, region_name="us-east-1",
                      aws_access_key_id=seaweed.access_key,
                      aws_secret_access_key=seaweed.secret_key,
                      verify=str(seaweed.cert_file),  # self-signed, SAN IP:127.0.0.1
                      config=Config(s3={"addressing_style": "path"}))
    assert "Buckets" in s3.list_buckets()
    ids = seaweed.workdir / "identities.json"
    assert stat.S_IMODE(ids.stat().st_mode) == 0o600
    assert json.loads(ids.read_text())["identities"][0]["credentials"][0]["accessKey"] == seaweed.access_key


def test_listening_ports_stay_out_of_the_ephemeral_range():
    """A port from the kernel's ephemeral range can be taken by an outgoing connection
    between the draw and the server's bind (a drill once failed on "Address already in use"),
    so the lab draws below it: the port and the drill's default (port + 1000), never one
    handed out before."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    drawn = [free_port() for draw in range(100)]
    assert all(port + DRILL_PORT_OFFSET < low for port in drawn)
    drills = [port + DRILL_PORT_OFFSET for port in drawn]
    assert len(set(drawn + drills)) == 2 * len(drawn)
    for port in drawn[:5] + drills[:5]:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))  # each was free when drawn
