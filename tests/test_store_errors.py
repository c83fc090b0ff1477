"""Content-store errors have their own status, never "database unavailable" (only real
database connection failures are UNAVAILABLE), TimeoutError is DEADLINE_EXCEEDED unless the
database driver raised it, and health reports the store next to the database.

The store failures are ones root cannot bypass (the tests run as root): the store directory
replaced by a file, os.link failing with ENOSPC / EIO, an immutable path holding other bytes."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import shutil
import socket
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ghostly.common.v1 import common_pb2
from ghostly.ingest.v1 import ingest_pb2_grpc
from ghostly.statistics.v1 import statistics_pb2, statistics_pb2_grpc
from libs import errors
from libs.emg.synthetic import ChannelSpec, SyntheticSpec, ghostly_file_name, regular_contractions, write_synthetic_c3d
from libs.grpc_server import ServiceSpec, start_service
from libs.grpc_server.interceptor import STATUS_OF, is_connection_error, status_for
from libs.storage import LocalContentStore, collect_opened, open_store
from libs.storage.base import store_error
from services.ingest.server import SPEC as INGEST
from services.jit_signal.server import SPEC as JIT
from services.statistics.server import SPEC as STATISTICS
from tests.helpers import free_port, make_config, register_patient, upload_messages, wait_for

C = grpc.StatusCode


# -- The mapping table ------------------------------------------------------------------------


async def _asyncpg_refused() -> BaseException:
    try:
        await asyncpg.connect(f"postgresql://nobody@127.0.0.1:{free_port()}/none", timeout=5)
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("connected to a closed port")


async def _asyncpg_timeout() -> BaseException:
    """A server that accepts and never answers: asyncpg's own connect timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        try:
            await asyncpg.connect(f"postgresql://nobody@127.0.0.1:{port}/none", timeout=0.2)
        except BaseException as exc:  # noqa: BLE001
            return exc
    raise AssertionError("connected to a silent server")


def test_store_errors_come_first_in_the_mapping_table():
    """A store error is matched before anything else (StoreConflict is also an OSError)."""
    classes = [cls for cls, _ in STATUS_OF]
    assert classes[:3] == [errors.StoreConflict, errors.StoreFull, errors.StoreError]
    assert OSError not in classes and TimeoutError not in classes


@pytest.mark.parametrize(
    "exc, code, message",
    [
        (
            errors.StoreConflict("content store: 'P/a.c3d' already holds different bytes"),
            C.FAILED_PRECONDITION,
            "content store: 'P/a.c3d' already holds different bytes",
        ),
        (
            store_error(OSError(errno.ENOSPC, "No space left on device"), "publish", "P/a.c3d"),
            C.RESOURCE_EXHAUSTED,
            "content store: cannot publish 'P/a.c3d': No space left on device (ENOSPC)",
        ),
        (
            store_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "publish", "P/a.c3d"),
            C.RESOURCE_EXHAUSTED,
            "content store: cannot publish 'P/a.c3d': Disk quota exceeded (EDQUOT)",
        ),
        (
            store_error(PermissionError(errno.EACCES, "Permission denied"), "read", "P/a.c3d"),
            C.INTERNAL,
            "content store: cannot read 'P/a.c3d': Permission denied (EACCES)",
        ),
        (
            store_error(FileExistsError(errno.EEXIST, "File exists"), "create the folder of", "P/a.c3d"),
            C.INTERNAL,
            "content store: cannot create the folder of 'P/a.c3d': File exists (EEXIST)",
        ),
        (
            errors.DataLoss("the stored C3D file no longer matches its file_hash"),
            C.DATA_LOSS,
            "the stored C3D file no longer matches its file_hash",
        ),
        # Not the store's, not the database's: an OSError of the handler's own is INTERNAL.
        (PermissionError(errno.EACCES, "Permission denied"), C.INTERNAL, ""),
        (FileExistsError(errno.EEXIST, "File exists"), C.INTERNAL, ""),
        (OSError(errno.ENOSPC, "No space left on device"), C.INTERNAL, ""),
        # Socket-level connection failures: the database.
        (
            ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            C.UNAVAILABLE,
            "database unavailable: ConnectionResetError: [Errno 104] Connection reset by peer",
        ),
        (
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            C.UNAVAILABLE,
            "database unavailable: ConnectionDoesNotExistError: connection was closed in the middle of operation",
        ),
        (
            TimeoutError("deadline exceeded waiting for the statistics service"),
            C.DEADLINE_EXCEEDED,
            "deadline exceeded waiting for the statistics service",
        ),
        (TimeoutError(), C.DEADLINE_EXCEEDED, "deadline exceeded"),
    ],
    ids=lambda v: v.__class__.__name__ if isinstance(v, BaseException) else None,
)
def test_mapping(exc, code, message):
    assert status_for(exc) == (code, message)
    assert not is_connection_error(exc) or code is C.UNAVAILABLE


def test_store_errors_are_never_connection_errors():
    for exc in (errors.StoreConflict("x"), errors.StoreFull("x"), errors.StoreError("x")):
        assert not is_connection_error(exc)
    assert isinstance(errors.StoreConflict("x"), FileExistsError)  # ContentStore.commit's promise


async def test_database_driver_errors_are_unavailable():
    refused = await _asyncpg_refused()
    code, message = status_for(refused)
    assert code is C.UNAVAILABLE and message.startswith("database unavailable: ConnectionRefusedError")
    assert is_connection_error(refused)

    timeout = await _asyncpg_timeout()
    assert isinstance(timeout, TimeoutError)
    # asyncpg timed out connecting: the database is unavailable (retryable) ...
    assert status_for(timeout)[0] is C.UNAVAILABLE and is_connection_error(timeout)
    assert status_for(timeout)[1].startswith("database unavailable: TimeoutError")
    # ... unless the call's own deadline has passed: then the deadline is the answer.
    assert status_for(timeout, deadline_passed=True)[0] is C.DEADLINE_EXCEEDED
    assert status_for(TimeoutError("t"), deadline_passed=True) == (C.DEADLINE_EXCEEDED, "t")


# -- The store itself -------------------------------------------------------------------------


async def test_local_store_wraps_its_oserrors(tmp_path, monkeypatch):
    store = LocalContentStore(tmp_path / "store")
    async with store.staging() as staging:
        await staging.write(b"abc")
        await staging.commit("P/a.c3d")
    # Same bytes again: kept; other bytes: StoreConflict, which is a FileExistsError.
    async with store.staging() as staging:
        await staging.write(b"abc")
        assert (await staging.commit("P/a.c3d")).sha256 == hashlib.sha256(b"abc").hexdigest()
    async with store.staging() as staging:
        await staging.write(b"xyz")
        with pytest.raises(FileExistsError) as info:
            await staging.commit("P/a.c3d")
    assert isinstance(info.value, errors.StoreConflict)
    assert str(info.value) == "content store: 'P/a.c3d' already holds different bytes (stored files are immutable)"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "link", full)
    async with store.staging() as staging:
        await staging.write(b"new")
        with pytest.raises(errors.StoreFull) as info:
            await staging.commit("P/b.c3d")
    assert str(info.value) == "content store: cannot publish 'P/b.c3d': No space left on device (ENOSPC)"
    assert str(tmp_path) not in str(info.value)  # no server path in what the caller sees
    assert isinstance(info.value.__cause__, OSError)  # the full error stays in the logs
    monkeypatch.undo()

    # A file where a folder belongs.
    (store.root / "Q").write_bytes(b"not a folder")
    async with store.staging() as staging:
        await staging.write(b"q")
        with pytest.raises(errors.StoreError) as info:
            await staging.commit("Q/c.c3d")
    assert not isinstance(info.value, FileExistsError)  # not mistaken for "other bytes at that path"
    assert str(info.value).startswith("content store: cannot create the folder of 'Q/c.c3d': ")

    assert await store.check() is None
    # The whole store directory replaced by a file.
    shutil.rmtree(store.root)
    store.root.write_bytes(b"not a directory")
    assert "is not a directory" in await store.check()
    with pytest.raises(errors.StoreError) as info:
        async with store.staging():
            pass
    assert str(info.value) == ("content store: cannot start an upload in the staging folder: Not a directory (ENOTDIR)")
    with pytest.raises(errors.NotFound):
        await store.stat("P/a.c3d")
    # Opening a store whose root cannot be created does not fail: its health says so.
    blocked = LocalContentStore(store.root / "sub")
    assert await blocked.check() == f"content store root {blocked.root} is not a directory"


async def test_write_errors_of_an_upload(tmp_path):
    store = LocalContentStore(tmp_path / "store")

    class FullFile:
        closed = False

        def write(self, chunk):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.closed = True

    async with store.staging() as staging:
        staging._handle.close()
        staging._handle = FullFile()
        with pytest.raises(
            errors.StoreFull,
            match=r"^content store: cannot write the upload to the staging "
            r"folder: No space left on device \(ENOSPC\)$",
        ):
            await staging.write(b"x")


def test_open_store_is_collected_for_the_health_probe(tmp_path):
    outside = open_store(tmp_path / "a")
    with collect_opened() as found:
        inside = open_store(tmp_path / "b")
    assert found == [inside] and outside not in found


# -- A real server ----------------------------------------------------------------------------


def _synthetic(directory: Path) -> tuple[bytes, str]:
    seed = 10_000_000 + secrets.randbelow(10**9)  # content no other test uploads
    spec = SyntheticSpec(
        duration_s=12.0,
        seed=seed,
        channels=[
            ChannelSpec(contractions=regular_contractions(3, 1.5, 3.0)),
            ChannelSpec(contractions=regular_contractions(3, 1.5, 3.0, amplitude_v=200e-6)),
        ],
    )
    name = ghostly_file_name(spec, seconds=seed % 60, frac=f"{seed % 10000:04d}")
    path = directory / f"{seed}.c3d"
    write_synthetic_c3d(path, spec)
    return path.read_bytes(), name


async def _health(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.fixture
async def ingest(database_url, tmp_path):
    cfg = make_config(database_url, tmp_path / "data", ingest_workers=1)
    server = await start_service(INGEST, cfg, port=0)
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def patient(database_url) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await register_patient(conn, "S")
    finally:
        await conn.close()


async def _upload_error(server, data: bytes, name: str, patient: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient), timeout=30)
    assert "database" not in info.value.details()
    return info.value


async def test_disk_full_is_resource_exhausted_not_database_unavailable(ingest, patient, tmp_path, monkeypatch):
    data, name = _synthetic(tmp_path)

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "link", full)
    err = await _upload_error(ingest, data, name, patient)
    assert err.code() is C.RESOURCE_EXHAUSTED
    assert err.details() == f"content store: cannot publish '{patient}/{name}': No space left on device (ENOSPC)"
    assert ingest.serving  # a store error is not a database outage: the pool is kept, still SERVING

    monkeypatch.undo()  # space again: the same upload goes through
    async with grpc.aio.insecure_channel(ingest.address) as ch:
        reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient), timeout=60)
    assert reply.created and reply.status == common_pb2.PROCESSING_STATUS_COMPLETED
    assert reply.file_path == f"{patient}/{name}"


async def test_io_error_of_the_store_is_internal_with_the_store_message(ingest, patient, tmp_path, monkeypatch):
    data, name = _synthetic(tmp_path)

    def broken(src, dst):
        raise OSError(errno.EIO, "Input/output error", str(dst))

    monkeypatch.setattr(os, "link", broken)
    err = await _upload_error(ingest, data, name, patient)
    assert err.code() is C.INTERNAL
    assert err.details().startswith(
        f"content store: cannot publish '{patient}/{name}': Input/output error (EIO) (request id "
    )
    assert str(tmp_path) not in err.details()


async def test_immutable_path_holding_other_bytes_is_failed_precondition(ingest, patient, tmp_path):
    data, name = _synthetic(tmp_path)
    stem = name[: -len(".c3d")]
    folder = ingest.context.config.store_dir / patient
    folder.mkdir(parents=True)
    # The name is taken by other bytes, and so is the content-named fallback ingest tries next.
    fallback = f"{stem}__{hashlib.sha256(data).hexdigest()[:12]}.c3d"
    (folder / name).write_bytes(b"other bytes")
    (folder / fallback).write_bytes(b"yet other bytes")
    err = await _upload_error(ingest, data, name, patient)
    assert err.code() is C.FAILED_PRECONDITION
    assert err.details() == (
        f"content store: '{patient}/{fallback}' already holds different bytes (stored files are immutable)"
    )

    (folder / fallback).unlink()  # only the name taken: ingest keeps both, the new one content-named
    async with grpc.aio.insecure_channel(ingest.address) as ch:
        reply = await ingest_pb2_grpc.IngestServiceStub(ch).Upload(upload_messages(data, name, patient), timeout=60)
    assert reply.created and reply.file_path == f"{patient}/{fallback}"


async def test_health_reports_the_store(database_url, patient, tmp_path):
    cfg = make_config(database_url, tmp_path / "data", ingest_workers=1)
    servers = {spec.name: await start_service(spec, cfg, port=0) for spec in (INGEST, JIT, STATISTICS)}
    store_dir = cfg.store_dir
    try:
        for s in servers.values():
            assert await _health(s.address) == "SERVING" and s.health_detail is None
        assert len(servers["ingest"].context.stores) == 1 and len(servers["jit_signal"].context.stores) == 1
        assert servers["statistics"].context.stores == []

        shutil.rmtree(store_dir)
        store_dir.write_bytes(b"the store directory replaced by a file")

        async def store_users_down():
            return all([await _health(servers[n].address) == "NOT_SERVING" for n in ("ingest", "jit_signal")])

        await wait_for(store_users_down, timeout=10)
        for n in ("ingest", "jit_signal"):
            assert servers[n].health_detail == f"content store root {store_dir} is not a directory"
        assert await _health(servers["statistics"].address) == "SERVING"  # uses no store

        data, name = _synthetic(tmp_path)
        err = await _upload_error(servers["ingest"], data, name, patient)
        assert err.code() is C.INTERNAL
        assert err.details().startswith(
            "content store: cannot start an upload in the staging folder: Not a directory (ENOTDIR) (request id "
        )

        store_dir.unlink()
        store_dir.mkdir()

        async def back():
            return all([await _health(s.address) == "SERVING" for s in servers.values()])

        await wait_for(back, timeout=10)  # no restart needed
        assert servers["ingest"].health_detail is None
    finally:
        for s in servers.values():
            await s.stop(0)


class _Raising(statistics_pb2_grpc.StatisticsServiceServicer):
    """GetSession fails the way its session id names."""

    async def GetSession(self, request, context):
        kind = request.session_id
        if kind == "timeout":
            raise TimeoutError("deadline exceeded waiting for the jit_signal service at 127.0.0.1:1")
        if kind == "oserror":
            raise PermissionError(errno.EACCES, "Permission denied", "/srv/secret/file")
        if kind == "database":
            await asyncpg.connect(f"postgresql://nobody@127.0.0.1:{free_port()}/none", timeout=5)
        if kind == "slow":  # cancelled by gRPC at the deadline
            await asyncio.sleep(5)
        return statistics_pb2.Session(id=kind)


async def test_oserrors_through_a_real_server(database_url, tmp_path):
    async def register(server, ctx):
        statistics_pb2_grpc.add_StatisticsServiceServicer_to_server(_Raising(), server)

    spec = ServiceSpec(name="statistics", full_names=STATISTICS.full_names, register=register)
    server = await start_service(spec, make_config(database_url, tmp_path), port=0)
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = statistics_pb2_grpc.StatisticsServiceStub(ch)

            async def call(kind: str, timeout: float = 10) -> grpc.aio.AioRpcError:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.GetSession(statistics_pb2.GetSessionRequest(session_id=kind), timeout=timeout)
                return info.value

            err = await call("timeout")
            assert (err.code(), err.details()) == (
                C.DEADLINE_EXCEEDED,
                "deadline exceeded waiting for the jit_signal service at 127.0.0.1:1",
            )
            err = await call("oserror")
            assert err.code() is C.INTERNAL and err.details().startswith("internal error (request id ")
            err = await call("database")
            assert err.code() is C.UNAVAILABLE
            assert err.details().startswith("database unavailable: ConnectionRefusedError")
            err = await call("slow", timeout=0.3)
            assert err.code() is C.DEADLINE_EXCEEDED
            assert server.serving
    finally:
        await server.stop(0)
