"""Store fixtures: a real S3-protocol server (moto's standalone server) on loopback, started by
the tests themselves (libs.storage.s3_server), and one store of each backend per test."""

from __future__ import annotations

import os
import uuid

import pytest

from libs.storage import LocalContentStore
from libs.storage.s3 import S3ContentStore
from libs.storage.s3_server import EmbeddedS3


@pytest.fixture(scope="session")
def s3_server():
    """The server, its endpoint and credentials in the standard AWS_* variables (what
    botocore and so libs.storage.s3 read) for the rest of the run."""
    with EmbeddedS3() as server:
        env = server.env()
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield server
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    name = f"ghostly-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture(params=["local", "s3"])
async def store(request, tmp_path):
    """The same contract tests against both backends."""
    if request.param == "local":
        yield LocalContentStore(tmp_path / "store")
        return
    request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    st = S3ContentStore(f"s3://{bucket}/c3d", staging_dir=tmp_path / "s3-staging")
    yield st
    await st.aclose()
