"""The lake under an S3 prefix: staging and prod.

Apart from ``resources/lake.py`` because dagster-aws (boto3, and a good part of Dagster it pulls in)
costs seconds to import, and every run worker of the local environment would pay them for nothing.
"""

from __future__ import annotations

import os

from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from resources.lake import Lake, LakeError


class S3Lake(Lake):
    """The lake under an S3 prefix, through dagster-aws (any S3-compatible server via ``endpoint_url``)."""

    bucket: str
    prefix: str = ""
    s3: S3Resource
    _client: object = PrivateAttr(default=None)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}".rstrip("/")

    def _key(self, relative: str) -> str:
        return f"{self.prefix.strip('/')}/{relative}".lstrip("/")

    def _s3(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _write(self, relative: str, payload: bytes) -> None:
        # A PUT replaces the object atomically: readers see the old or the new partition, never a mix.
        self._s3().put_object(Bucket=self.bucket, Key=self._key(relative), Body=payload)

    def _list(self, prefix: str) -> dict[str, float]:
        pages = (
            self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        )
        root = self._key("")
        return {
            item["Key"][len(root) :]: item["LastModified"].timestamp()
            for page in pages
            for item in page.get("Contents", [])
        }

    def _arrow_filesystem(self):
        import pyarrow.fs

        # The same endpoint and region as boto3; credentials from the AWS chain (Arrow reads it too).
        endpoint = (
            self.s3.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = self.s3.region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        options = {"endpoint_override": endpoint} if endpoint else {}
        if region:
            options["region"] = region
        return pyarrow.fs.S3FileSystem(**options), f"{self.bucket}/{self.prefix.strip('/')}".rstrip("/")

    def _read(self, relative: str) -> bytes:
        client = self._s3()
        try:
            return client.get_object(Bucket=self.bucket, Key=self._key(relative))["Body"].read()
        except client.exceptions.NoSuchKey as missing:
            raise LakeError(f"not in the lake: {self.uri}/{relative} (materialize it first)") from missing
