"""Helpers of the tiering tests (a module of its own: test directories each
have a conftest.py, so "from conftest import" would find whichever was
imported first)."""

from __future__ import annotations

import json

from orochi_fdw.testing.services import S3Server


def create_target(conn, s3: S3Server, bucket: str, name: str = "cold", prefix: str = "pg", **options) -> None:
    opts = {"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key,
            "max_attempts": 2, "connect_timeout": 2, "read_timeout": 5, **options}
    conn.execute("SELECT orochi.create_storage_target(%s, %s, %s, %s, %s, %s::jsonb)",
                 (name, s3.endpoint, bucket, prefix, s3.region, json.dumps(opts)))
