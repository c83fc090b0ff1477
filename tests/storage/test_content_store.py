"""The ContentStore contract, run against both backends: the local directory and an S3 bucket
on a real S3-protocol server (moto's standalone server on loopback, tests/storage/conftest.py):
streaming upload and download, checksum verified on read, immutability, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc

import pytest

from libs import config as config_mod
from libs.errors import DataLoss, InvalidArgument, NotFound, StoreConflict, StoreError
from libs.storage import LocalContentStore, open_store
from libs.storage.s3 import S3ContentStore


async def put(store, path: str, data: bytes, chunk: int = 1 << 20):
    async with store.staging() as staging:
        for i in range(0, len(data), chunk):
            await staging.write(data[i : i + chunk])
        return await staging.commit(path)


async def test_round_trip_stat_exists_and_both_forms_of_local_path(store):
    data = os.urandom(300_000)
    obj = await put(store, "P1/a.c3d", data)
    assert (obj.path, obj.size_bytes, obj.sha256) == ("P1/a.c3d", len(data), hashlib.sha256(data).hexdigest())
    assert await store.exists("P1/a.c3d") and not await store.exists("P1/b.c3d")
    assert await store.stat("P1/a.c3d") == obj
    async with store.local_path("P1/a.c3d") as local:
        assert local.read_bytes() == data
    with store.local_path("P1/a.c3d") as local:  # scripts: the synchronous form
        assert local.read_bytes() == data


async def test_immutability_same_bytes_kept_other_bytes_conflict(store):
    data = os.urandom(50_000)
    first = await put(store, "P1/a.c3d", data)
    assert await put(store, "P1/a.c3d", data) == first  # same bytes: kept
    with pytest.raises(StoreConflict) as info:
        await put(store, "P1/a.c3d", b"other bytes")
    assert isinstance(info.value, FileExistsError)  # what callers catch
    async with store.local_path("P1/a.c3d") as local:
        assert local.read_bytes() == data  # never overwritten


async def test_concurrent_commits_of_different_bytes_one_wins(store):
    results = await asyncio.gather(
        *(put(store, "P1/race.c3d", bytes([i]) * 70_000) for i in range(4)), return_exceptions=True
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(r, StoreConflict) for r in results if r not in won)
    assert (await store.stat("P1/race.c3d")).sha256 == won[0].sha256


async def test_missing_objects_and_refused_paths(store):
    with pytest.raises(NotFound):
        await store.stat("P1/none.c3d")
    with pytest.raises(NotFound):
        async with store.local_path("P1/none.c3d"):
            pass
    await store.delete("P1/none.c3d")  # idempotent
    for bad in ("../x.c3d", "/abs.c3d", "P1/.hidden", "a\\b"):
        with pytest.raises(InvalidArgument):
            await store.stat(bad)
        with pytest.raises(InvalidArgument):
            await put(store, bad, b"x")


async def test_delete_and_health_probe(store):
    await put(store, "P1/a.c3d", b"abc")
    await store.delete("P1/a.c3d")
    assert not await store.exists("P1/a.c3d")
    assert await store.check() is None
    assert await store.sweep_staging(3600) == 0


async def test_streaming_upload_and_download_do_not_hold_the_file(store):
    """40 MiB through the store (multipart of 5 MiB parts for S3): Python allocations stay a
    few chunks / parts (the client's copies of one part), well under the file's size."""
    if isinstance(store, S3ContentStore):
        store.part_size = 5 << 20
    data = os.urandom(40 << 20)
    digest = hashlib.sha256(data).hexdigest()
    tracemalloc.start()
    try:
        async with store.staging() as staging:
            for i in range(0, len(data), 1 << 20):
                await staging.write(data[i : i + (1 << 20)])
            obj = await staging.commit("P1/big.c3d")
        up_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        async with store.local_path("P1/big.c3d") as local:
            down_peak = tracemalloc.get_traced_memory()[1]
            h = hashlib.sha256()
            with open(local, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    finally:
        tracemalloc.stop()
    assert obj.sha256 == digest and h.hexdigest() == digest
    assert up_peak < 26 << 20 and down_peak < 16 << 20, (up_peak, down_peak)


# -- S3 only --------------------------------------------------------------------------------
@pytest.fixture
async def s3_store(s3_server, s3_bucket, tmp_path):
    st = S3ContentStore(f"s3://{s3_bucket}/c3d", staging_dir=tmp_path / "s3-staging")
    yield st
    await st.aclose()


async def test_s3_checksum_verified_on_read(s3_server, s3_store):
    obj = await put(s3_store, "P1/a.c3d", b"original bytes" * 1000)
    # Bytes replaced behind the store's back, with the metadata recorded at commit kept.
    s3_server.client().put_object(
        Bucket=s3_store.bucket, Key="c3d/P1/a.c3d", Body=b"tampered bytes" * 1000, Metadata={"sha256": obj.sha256}
    )
    with pytest.raises(DataLoss, match="recorded at commit"):
        async with s3_store.local_path("P1/a.c3d"):
            pass
    assert not list(s3_store.staging_dir.glob("*.read"))  # the bad copy is not left behind


async def test_s3_objects_put_by_others_are_hashed_on_read(s3_server, s3_store):
    """A tablet or bridge writing straight to the bucket: no sha256 metadata."""
    data = os.urandom(100_000)
    s3_server.client().put_object(Bucket=s3_store.bucket, Key="c3d/P2/ext.c3d", Body=data)
    obj = await s3_store.stat("P2/ext.c3d")
    assert obj.sha256 == hashlib.sha256(data).hexdigest() and obj.size_bytes == len(data)
    async with s3_store.local_path("P2/ext.c3d") as local:
        assert local.read_bytes() == data
    # Immutability holds for it too.
    assert await put(s3_store, "P2/ext.c3d", data) == obj
    with pytest.raises(StoreConflict):
        await put(s3_store, "P2/ext.c3d", b"x")


async def test_s3_keys_identity_and_prefix(s3_store, s3_server):
    await put(s3_store, "P1/a.c3d", b"abc")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert keys == ["c3d/P1/a.c3d"]
    assert s3_store.identity() == f"s3://{s3_store.bucket}/c3d"
    assert s3_store.relative("c3d/P1/a.c3d") == "P1/a.c3d" and s3_store.relative("other/P1/a.c3d") is None
    whole = S3ContentStore(f"s3://{s3_store.bucket}")
    assert whole.identity() == f"s3://{s3_store.bucket}" and whole.key("P1/a.c3d") == "P1/a.c3d"
    await whole.aclose()


async def test_s3_sweep_aborts_stale_multipart_uploads(s3_server, s3_store):
    client = s3_server.client()
    client.create_multipart_upload(Bucket=s3_store.bucket, Key="c3d/P1/dead.c3d")
    client.create_multipart_upload(Bucket=s3_store.bucket, Key="elsewhere/x")  # not ours
    assert await s3_store.sweep_staging(0) == 1
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", [])]
    assert left == ["elsewhere/x"]


async def test_s3_failures_are_store_errors(s3_server, tmp_path):
    missing = S3ContentStore("s3://no-such-bucket-ghostly/c3d", staging_dir=tmp_path)
    with pytest.raises(StoreError) as info:
        await put(missing, "P1/a.c3d", b"abc")
    assert "NoSuchBucket" in str(info.value) and "'P1/a.c3d'" in str(info.value)
    assert "cannot be read" in (await missing.check() or "")
    await missing.aclose()
    down = S3ContentStore("s3://ghostly-down/c3d", endpoint_url="http://127.0.0.1:9", staging_dir=tmp_path)
    with pytest.raises(StoreError):
        await down.stat("P1/a.c3d")
    await down.aclose()


def test_open_store_and_the_store_url_setting(tmp_path, s3_server):
    assert config_mod.load({}).store_location.startswith("file://")
    cfg = config_mod.load({"GHOSTLY_STORE_DIR": str(tmp_path / "dir")})
    assert cfg.store_location == f"file://{tmp_path / 'dir'}"
    local = open_store(cfg.store_location)
    assert isinstance(getattr(local, "wrapped", local), LocalContentStore)
    assert local.identity() == f"file://{(tmp_path / 'dir').resolve()}"
    cfg = config_mod.load({"GHOSTLY_STORE_URL": "s3://ghostly-bucket/some/prefix"})
    hooks: list = []
    s3 = open_store(cfg.store_location, on_stop=hooks)
    inner = getattr(s3, "wrapped", s3)
    assert isinstance(inner, S3ContentStore) and inner.prefix == "some/prefix/" and hooks == [inner.aclose]
    assert inner.endpoint_url == s3_server.endpoint and inner.region == "us-east-1"
    assert s3.identity() == "s3://ghostly-bucket/some/prefix"
    with pytest.raises(config_mod.ConfigError, match="GHOSTLY_STORE_URL"):
        config_mod.load({"GHOSTLY_STORE_URL": "s3://Bad_Bucket/x"})


async def test_s3_read_cache_serves_the_same_version_and_rereads_a_new_one(s3_server, s3_store):
    data = os.urandom(200_000)
    s3_server.client().put_object(Bucket=s3_store.bucket, Key="c3d/P3/a.c3d", Body=data)
    await s3_store.stat("P3/a.c3d")  # downloaded once, to hash it
    async with s3_store.local_path("P3/a.c3d") as local:
        assert local.read_bytes() == data and os.stat(local).st_nlink == 2  # the cached copy, linked
    # Another version under the key (removed and written again): its own download.
    s3_server.client().delete_object(Bucket=s3_store.bucket, Key="c3d/P3/a.c3d")
    s3_server.client().put_object(Bucket=s3_store.bucket, Key="c3d/P3/a.c3d", Body=b"new" * 1000)
    assert (await s3_store.stat("P3/a.c3d")).sha256 == hashlib.sha256(b"new" * 1000).hexdigest()
    async with s3_store.local_path("P3/a.c3d") as local:
        assert local.read_bytes() == b"new" * 1000
    await s3_store.aclose()
    assert not list(s3_store.staging_dir.glob("*.cache"))


async def test_s3_commit_leaves_a_verified_copy_for_the_readers_that_follow(s3_store):
    await put(s3_store, "P4/a.c3d", b"abc" * 1000)
    async with s3_store.local_path("P4/a.c3d") as local:
        assert local.read_bytes() == b"abc" * 1000 and os.stat(local).st_nlink == 2
