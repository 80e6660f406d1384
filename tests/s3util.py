"""An S3 service for the tests: moto's ``ThreadedMotoServer`` on 127.0.0.1, one per session.

The server runs in a thread of the test process; :meth:`MotoS3.reset` empties it between
tests. Credentials are moto's fixed test ones, set in the environment so that every
client (and every process started by a test) finds them through botocore's usual chain.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

BUCKET = "flowserv-test"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class MotoS3:
    """A running moto server with a synchronous client for set-up and inspection."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION)

    def reset(self) -> None:
        """Forget every bucket and object, then create the empty test bucket."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass
        self.client.create_bucket(Bucket=BUCKET)

    def args(self, prefix: str = "") -> dict[str, str]:
        """The ``args`` of an ``s3`` volume spec on the test bucket."""
        return {
            "bucket": BUCKET,
            "prefix": prefix,
            "endpoint_url": self.endpoint_url,
            "region": REGION,
        }

    def contents(self) -> list[str]:
        """Every object name in the test bucket and ``upload:{name}`` per open upload."""
        names: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            names.extend(item["Key"] for item in page.get("Contents", ()))
        uploads = self.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", ())
        names.extend(f"upload:{upload['Key']}" for upload in uploads)
        return sorted(names)


@contextmanager
def moto_s3() -> Iterator[MotoS3]:
    """Start a moto S3 server on a free port of 127.0.0.1 with the test credentials set."""
    # The server logs every request; a failing test shows enough without them.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoS3(f"http://{host}:{port}")
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
