from datetime import date

import boto3
import duckdb
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource
from moto import mock_aws

from resources.lake import LakeError, LocalLake
from resources.s3_lake import S3Lake

DAY = date(2026, 1, 5)
NEXT_DAY = date(2026, 1, 6)


def frame(rows: int, start: int = 0) -> pd.DataFrame:
    ids = range(start, start + rows)
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(ids, dtype="int64"),
            "amount": pd.Series([1.25 * k for k in ids], dtype="float64"),
            "transacted_at": pd.Series(
                pd.date_range("2026-01-05 08:00", periods=rows, freq="min"), dtype="datetime64[ns]"
            ),
            "kind": pd.Series([f"kind-{k}" for k in ids], dtype="string"),
        }
    )


@pytest.fixture
def local_lake(tmp_path) -> LocalLake:
    return LocalLake(root=str(tmp_path))


@pytest.fixture(scope="module")
def s3_world():
    """One moto S3 per module: building boto3 clients costs more than the tests, so tests share them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            client = boto3.client("s3", region_name="us-east-1")
            yield client, S3Lake(bucket="keel-test", prefix="lake", s3=S3Resource(region_name="us-east-1"))


@pytest.fixture
def s3_lake(s3_world):
    client, lake = s3_world
    client.create_bucket(Bucket="keel-test")
    yield lake
    for item in client.list_objects_v2(Bucket="keel-test").get("Contents", []):
        client.delete_object(Bucket="keel-test", Key=item["Key"])
    client.delete_bucket(Bucket="keel-test")


@pytest.fixture(params=["local_lake", "s3_lake"])
def lake(request):
    return request.getfixturevalue(request.param)


def test_a_written_partition_reads_back_equal(lake):
    written = frame(5)
    lake.write_partition("t", DAY, written)
    assert lake.read_partition("t", DAY).equals(written)


def test_writing_a_partition_again_replaces_it(lake):
    lake.write_partition("t", DAY, frame(5))
    second = frame(2, start=100)
    lake.write_partition("t", DAY, second)
    assert lake.read_partition("t", DAY).equals(second)
    assert lake.partition_row_count("t", DAY) == len(second)


def test_partitions_of_different_days_are_independent(lake):
    first, next_day = frame(3), frame(4, start=10)
    lake.write_partition("t", DAY, first)
    lake.write_partition("t", NEXT_DAY, next_day)
    lake.write_partition("t", DAY, frame(1, start=50))
    assert lake.read_partition("t", NEXT_DAY).equals(next_day)
    assert lake.partition_row_count("t", DAY) == 1


def test_an_unpartitioned_table_reads_back_equal(lake):
    written = frame(3)
    lake.write_table("customers", written)
    assert lake.read_table("customers").equals(written)


def test_reading_a_missing_partition_names_the_table_and_the_date(lake):
    lake.write_partition("t", DAY, frame(1))
    with pytest.raises(LakeError, match=r"missing_table.*2026-01-06"):
        lake.read_partition("missing_table", NEXT_DAY)
    with pytest.raises(LakeError, match="2026-01-06"):
        lake.read_partition("t", NEXT_DAY)


def test_reading_a_missing_table_names_the_table(lake):
    with pytest.raises(LakeError, match="missing_table"):
        lake.read_table("missing_table")


def test_the_row_count_of_a_missing_partition_is_a_lake_error(lake):
    with pytest.raises(LakeError, match="missing_table"):
        lake.partition_row_count("missing_table", DAY)


def test_a_partition_location_is_the_hive_path_under_the_lake_uri(lake):
    location = lake.location("t", DAY)
    assert location.startswith(lake.uri)
    assert location.endswith("t/date=2026-01-05/data.parquet")
    assert lake.write_partition("t", DAY, frame(1)) == location


def test_an_empty_typed_partition_reads_back_with_its_columns(lake):
    empty = frame(0)
    lake.write_partition("labels", DAY, empty)
    read = lake.read_partition("labels", DAY)
    assert read.empty
    assert read.dtypes.to_dict() == empty.dtypes.to_dict()
    assert lake.partition_row_count("labels", DAY) == 0


def test_the_s3_lake_uri_is_the_bucket_and_prefix(s3_lake):
    assert s3_lake.uri == "s3://keel-test/lake"


def test_the_s3_lake_stores_a_partition_under_the_prefix(s3_lake, s3_world):
    s3_lake.write_partition("t", DAY, frame(1))
    client, _ = s3_world
    keys = [item["Key"] for item in client.list_objects_v2(Bucket="keel-test")["Contents"]]
    assert keys == ["lake/t/date=2026-01-05/data.parquet"]


def test_the_local_lake_lays_partitions_out_hive_style_without_leftovers(local_lake, tmp_path):
    local_lake.write_partition("t", DAY, frame(2))
    local_lake.write_partition("t", DAY, frame(3))
    assert (tmp_path / "t" / "date=2026-01-05" / "data.parquet").is_file()
    assert list(tmp_path.rglob("*.partial")) == []


def read_as_dbt_does(root, table: str, columns: str) -> list[tuple]:
    return duckdb.sql(
        f"select {columns} from read_parquet('{root}/{table}/*/*.parquet', hive_partitioning=true)"
        f" order by {columns}"
    ).fetchall()


def test_duckdb_reads_all_local_partitions_with_their_date(local_lake, tmp_path):
    local_lake.write_partition("t", DAY, frame(2))
    local_lake.write_partition("t", NEXT_DAY, frame(3, start=10))
    rows = read_as_dbt_does(tmp_path, "t", "transaction_id, date")
    assert rows == [(0, DAY), (1, DAY), (10, NEXT_DAY), (11, NEXT_DAY), (12, NEXT_DAY)]


def test_duckdb_reads_the_lake_when_its_first_partitions_are_empty(local_lake, tmp_path):
    local_lake.write_partition("t", date(2026, 1, 4), frame(0))
    local_lake.write_partition("t", DAY, frame(2))
    assert read_as_dbt_does(tmp_path, "t", "kind, date") == [("kind-0", DAY), ("kind-1", DAY)]
