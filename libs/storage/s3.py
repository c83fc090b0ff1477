"""S3-compatible content store (AWS S3, MinIO, Ceph RGW, moto...) through aiobotocore.

Selected by GHOSTLY_STORE_URL=s3://bucket/prefix (libs.storage.open_store). The endpoint comes
from AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (unset: AWS itself); credentials from the
standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role); the
region from AWS_DEFAULT_REGION (default us-east-1). With an explicit endpoint, path-style
addressing is used (what MinIO and moto expect).

A store-relative path P is the object key <prefix>/P. The same rules as the local store:

* Upload (staging): the bytes are hashed while they are written to a local temporary file
  (bounded memory, whatever the size); commit sends that file with a conditional write
  (``If-None-Match: *``, a single PUT up to PART_SIZE, else a multipart upload of PART_SIZE
  parts completed conditionally), so nothing is ever overwritten. When the key exists: same
  SHA-256 -> kept, other bytes -> StoreConflict. The SHA-256 is stored as object metadata
  (x-amz-meta-sha256).
* Read (local_path): streamed to a temporary file, hashed on the way; a SHA-256 or size that
  does not match the metadata written at commit raises DataLoss (nothing is handed to the
  reader). Objects put in the bucket by something else (no sha256 metadata, e.g. a tablet
  uploading straight to the bucket) are hashed while read: stat() downloads them once (and
  remembers the hash per ETag). Each read pins the object version (HEAD, then GET If-Match
  its ETag); the last READ_CACHE_BYTES (64 MiB) of verified copies are kept in the local
  staging folder and handed to the next reader of the same version as a hard link (no GET:
  ingest reads a file two or three times, the JIT service on every request).
* Every failure of S3 itself is a StoreError (never a botocore exception); a missing object is
  NotFound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from libs.errors import DataLoss, InvalidArgument, NotFound, StoreConflict, StoreError
from libs.storage.base import ContentStore, FileStaging, LocalPathContext, StoredObject, validate_relative_path

log = logging.getLogger("ghostly.storage")

PART_SIZE = 8 << 20  # multipart part size and single-PUT limit (S3 minimum part: 5 MiB)
READ_CHUNK = 1 << 20  # download chunk
WRITE_PROBE_S = 60.0  # health probe: write test at most this often
READ_CACHE_BYTES = 64 << 20  # verified local copies of the objects read last (0 = none)
META_SHA256 = "sha256"  # x-amz-meta-sha256: lowercase hex SHA-256 of the object
_HASH_CACHE = 4096  # (key, ETag) -> sha256 of objects without metadata
_STAGING_PREFIX = "ghostly-s3-"


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket[/prefix] -> (bucket, prefix with a trailing '/' or '')."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidArgument(f"not an s3://bucket/prefix URL: {url!r}")
    bucket = parts.netloc
    if (
        not (3 <= len(bucket) <= 63)
        or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket)
        or not bucket[0].isalnum()
        or not bucket[-1].isalnum()
    ):
        raise InvalidArgument(f"S3 bucket name {bucket!r} is not valid (3-63 of a-z 0-9 . -)")
    prefix = parts.path.strip("/")
    if prefix:
        prefix = validate_relative_path(prefix) + "/"
    return bucket, prefix


def endpoint_from_env(env=None) -> str | None:
    env = os.environ if env is None else env
    return (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip() or None


def region_from_env(env=None) -> str:
    env = os.environ if env is None else env
    return (env.get("AWS_DEFAULT_REGION") or "").strip() or "us-east-1"


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or str(status or "")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _missing(exc: BaseException) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound") or _status(exc) == 404


def _precondition_failed(exc: BaseException) -> bool:
    # 412: the key exists (If-None-Match); 409 ConditionalRequestConflict: a concurrent write.
    return _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _status(exc) in (412, 409)


def _s3_error(exc: BaseException, action: str, path: str | None = None) -> StoreError:
    where = f" {path!r}" if path else ""
    response = getattr(exc, "response", None)
    if response:
        err = response.get("Error", {})
        reason = f"{err.get('Message') or 'error'} ({err.get('Code') or _status(exc)})"
    else:
        reason = str(exc) or type(exc).__name__
    return StoreError(f"content store: cannot {action}{where}: {reason}")


@contextlib.contextmanager
def _s3_errors(action: str, path: str | None = None):
    """Every failure of S3 (client errors, connection errors, timeouts) -> StoreError."""
    try:
        yield
    except (StoreError, NotFound, InvalidArgument, DataLoss, asyncio.CancelledError):
        raise
    except Exception as exc:
        raise _s3_error(exc, action, path) from exc


class S3ContentStore(ContentStore):
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        staging_dir: str | os.PathLike | None = None,
        part_size: int = PART_SIZE,
        read_cache_bytes: int = READ_CACHE_BYTES,
    ):
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url or endpoint_from_env()
        self.region = region or region_from_env()
        self.part_size = max(5 << 20, int(part_size))
        self.staging_dir = (
            Path(staging_dir) if staging_dir else Path(tempfile.gettempdir()) / f"ghostly-s3-staging-{os.getuid()}"
        )
        import aiobotocore.session

        self._session = aiobotocore.session.get_session()
        self._clients: dict[asyncio.AbstractEventLoop, tuple[contextlib.AbstractAsyncContextManager, object]] = {}
        self._hashes: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Read cache: verified local copies of recently read object versions ((key, ETag) ->
        # (file, size)), handed out as new hard links; removed at eviction and by aclose.
        self.read_cache_bytes = int(read_cache_bytes)
        self._cache: OrderedDict[tuple[str, str], tuple[Path, int]] = OrderedDict()
        self._cached_bytes = 0
        self._write_probed = -WRITE_PROBE_S

    def __repr__(self) -> str:
        return f"S3ContentStore({self.identity()!r}, endpoint={self.endpoint_url!r})"

    # -- client per event loop (aiohttp sessions belong to one loop) ----------------------------
    async def _client(self):
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            from aiobotocore.config import AioConfig

            options = {
                "retries": {"max_attempts": 3, "mode": "standard"},
                "connect_timeout": 10,
                "read_timeout": 60,
                "max_pool_connections": 32,
                # Checksums only where S3 requires them: not every S3-compatible server
                # knows the newer CRC trailers; our own SHA-256 is the integrity check.
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
            if self.endpoint_url:
                options["s3"] = {"addressing_style": "path"}
            cm = self._session.create_client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=AioConfig(**options)
            )
            client = await cm.__aenter__()
            entry = self._clients[loop] = (cm, client)
            for other in [lp for lp in self._clients if lp.is_closed()]:
                self._clients.pop(other, None)  # loops gone (their sockets went with them)
        return entry[1]

    async def aclose(self) -> None:
        """Close this loop's S3 client (service stop); the read cache's files go too."""
        for cache_key in list(self._cache):
            self._evict(cache_key)
        await self._close_client()

    async def _close_client(self) -> None:
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            with contextlib.suppress(Exception):
                await entry[0].__aexit__(None, None, None)

    def _run_sync(self, factory):
        """Run ``factory()`` (a coroutine) on a private loop in a thread: the synchronous
        ``with store.local_path(...)`` form (scripts, tests). Services use ``async with``."""

        async def run():
            try:
                return await factory()
            finally:
                await self._close_client()

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ghostly-s3") as pool:
            return pool.submit(asyncio.run, run()).result()

    # -- paths ---------------------------------------------------------------------------
    def key(self, path: str) -> str:
        return self.prefix + validate_relative_path(path)

    def relative(self, key: str) -> str | None:
        """The store-relative path of an object key, or None when the key is outside the prefix
        or not a valid store path."""
        if not key.startswith(self.prefix):
            return None
        try:
            return validate_relative_path(key[len(self.prefix) :])
        except InvalidArgument:
            return None

    def identity(self) -> str:
        return f"s3://{self.bucket}" + (f"/{self.prefix.rstrip('/')}" if self.prefix else "")

    # -- reads ---------------------------------------------------------------------------
    async def _head(self, path: str) -> dict | None:
        client = await self._client()
        with _s3_errors("read", path):
            try:
                return await client.head_object(Bucket=self.bucket, Key=self.key(path))
            except Exception as exc:
                if _missing(exc):
                    return None
                raise

    async def exists(self, path: str) -> bool:
        return await self._head(path) is not None

    async def stat(self, path: str) -> StoredObject:
        rel = validate_relative_path(path)
        head = await self._head(rel)
        if head is None:
            raise NotFound(f"no file {rel!r} in the content store")
        return StoredObject(rel, int(head["ContentLength"]), await self._sha256_of(rel, head))

    async def _sha256_of(self, rel: str, head: dict) -> str:
        digest = (head.get("Metadata") or {}).get(META_SHA256)
        if digest:
            return digest.lower()
        cache_key = (self.key(rel), head.get("ETag", ""))
        digest = self._hashes.get(cache_key)
        if digest is None:
            # Hashed by downloading it into the read cache: the reader that follows (ingest
            # right after this stat) gets that copy instead of a second GET.
            local = await self._download(rel, head)
            with contextlib.suppress(OSError):
                os.unlink(local)
            digest = self._hashes[cache_key]
        self._hashes.move_to_end(cache_key)
        return digest

    def _remember_hash(self, cache_key: tuple[str, str], digest: str) -> None:
        self._hashes[cache_key] = digest
        while len(self._hashes) > _HASH_CACHE:
            self._hashes.popitem(last=False)

    async def _stream(self, rel: str, sink, etag: str | None = None) -> dict:
        """GET the object (``etag``: that version only), feeding each chunk to ``sink``;
        returns the response (headers)."""
        client = await self._client()
        extra = {"IfMatch": etag} if etag else {}
        with _s3_errors("read", rel):
            try:
                response = await client.get_object(Bucket=self.bucket, Key=self.key(rel), **extra)
            except Exception as exc:
                if _missing(exc):
                    raise NotFound(f"no file {rel!r} in the content store") from None
                raise
            body = response["Body"]
            try:
                while chunk := await body.read(READ_CHUNK):
                    sink(chunk)
            finally:
                body.close()
        return response

    def _new_local(self, suffix: str) -> tuple[int, str]:
        self._staging_dir()
        try:
            return tempfile.mkstemp(dir=self.staging_dir, prefix=_STAGING_PREFIX, suffix=suffix)
        except OSError as exc:
            raise StoreError(f"content store: cannot create a local copy: {exc}") from exc

    def _from_cache(self, cache_key: tuple[str, str]) -> Path | None:
        """A new name (hard link) for the cached verified copy of this object version."""
        cached = self._cache.get(cache_key)
        if cached is None:
            return None
        name = self.staging_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}.read"
        try:
            os.link(cached[0], name)
        except OSError:  # swept or removed meanwhile: a miss
            self._evict(cache_key)
            return None
        self._cache.move_to_end(cache_key)
        return name

    def _evict(self, cache_key: tuple[str, str]) -> None:
        entry = self._cache.pop(cache_key, None)
        if entry is not None:
            self._cached_bytes -= entry[1]
            with contextlib.suppress(OSError):
                os.unlink(entry[0])

    def _keep(self, cache_key: tuple[str, str], local: Path, size: int) -> None:
        """Keep a verified copy (another hard link) in the read cache, oldest out first."""
        if size > self.read_cache_bytes // 4 or not cache_key[1]:
            return
        name = self.staging_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}.cache"
        try:
            os.link(local, name)
        except OSError:
            return
        self._evict(cache_key)
        self._cache[cache_key] = (name, size)
        self._cached_bytes += size
        while self._cached_bytes > self.read_cache_bytes and self._cache:
            self._evict(next(iter(self._cache)))

    async def _download(self, path: str, head: dict | None = None) -> Path:
        """The object in a new temporary file, SHA-256 and size checked against the metadata
        (objects without: hashed, the hash remembered). The version is pinned by its ETag
        (HEAD, then GET If-Match); a version read before comes from the read cache."""
        rel = validate_relative_path(path)
        if head is None:
            head = await self._head(rel)
            if head is None:
                raise NotFound(f"no file {rel!r} in the content store")
        etag = head.get("ETag", "")
        cache_key = (self.key(rel), etag)
        hit = self._from_cache(cache_key)
        if hit is not None:
            return hit
        fd, name = self._new_local(".read")
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:

                def sink(chunk: bytes) -> None:
                    nonlocal size
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)

                try:
                    response = await self._stream(rel, sink, etag or None)
                except OSError as exc:
                    raise StoreError(f"content store: cannot read {rel!r}: cannot write the local copy: {exc}") from exc
            expected = (response.get("Metadata") or {}).get(META_SHA256)
            length = response.get("ContentLength")
            if (length is not None and int(length) != size) or (expected and expected.lower() != h.hexdigest()):
                raise DataLoss(
                    f"content store: {rel!r} read back with {size} bytes, SHA-256 {h.hexdigest()[:12]}..., "
                    f"not the {length} bytes, SHA-256 {str(expected)[:12]}... recorded at commit"
                )
            if not expected:
                self._remember_hash(cache_key, h.hexdigest())
            self._keep(cache_key, Path(name), size)
            return Path(name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise

    def local_path(self, path: str) -> _Download:
        return _Download(self, path)

    # -- writes --------------------------------------------------------------------------
    def _staging_dir(self) -> None:
        try:
            self.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"content store: cannot create the local staging folder: {exc}") from exc

    @contextlib.asynccontextmanager
    async def staging(self):
        self._staging_dir()
        try:
            fd, name = tempfile.mkstemp(dir=self.staging_dir, prefix=_STAGING_PREFIX, suffix=".part")
        except OSError as exc:
            raise StoreError(f"content store: cannot start an upload in the staging folder: {exc}") from exc
        staging = _S3Staging(self, Path(name), os.fdopen(fd, "wb"))
        try:
            yield staging
        finally:
            with contextlib.suppress(OSError):
                staging.close()
            with contextlib.suppress(OSError):
                os.unlink(name)

    async def _put_file(self, local: Path, rel: str, size: int, digest: str) -> bool:
        """Write ``local`` under ``rel`` unless the key exists. True: written; False: taken."""
        client = await self._client()
        key = self.key(rel)
        meta = {META_SHA256: digest}
        try:
            with _s3_errors("publish", rel):
                if size <= self.part_size:
                    data = await asyncio.to_thread(local.read_bytes)
                    put = await client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=data,
                        IfNoneMatch="*",
                        Metadata=meta,
                        ContentType="application/octet-stream",
                    )
                    self._keep((key, put.get("ETag", "")), local, size)  # readers right after: no GET
                    return True
                upload = await client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, Metadata=meta, ContentType="application/octet-stream"
                )
                upload_id = upload["UploadId"]
                try:
                    parts = []
                    with open(local, "rb") as f:
                        number = 1
                        while chunk := await asyncio.to_thread(f.read, self.part_size):
                            part = await client.upload_part(
                                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                            )
                            parts.append({"ETag": part["ETag"], "PartNumber": number})
                            number += 1
                    done = await client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(
                            client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                        )
                    raise
                self._keep((key, done.get("ETag", "")), local, size)
                return True
        except StoreError as exc:
            if exc.__cause__ is not None and _precondition_failed(exc.__cause__):
                return False
            raise

    async def delete(self, path: str) -> None:
        rel = validate_relative_path(path)
        client = await self._client()
        with _s3_errors("delete", rel):
            await client.delete_object(Bucket=self.bucket, Key=self.key(rel))

    # -- maintenance ---------------------------------------------------------------------
    async def check(self) -> str | None:
        """Readable (the bucket lists: every call) and writable (a probe object is put and
        removed: at most every WRITE_PROBE_S, as the health loop runs every few seconds and
        S3 requests are billed)."""
        try:
            client = await self._client()
            await client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:  # noqa: BLE001
            return f"content store {self.identity()} cannot be read: {_s3_error(exc, 'list')}"
        if time.monotonic() - self._write_probed < WRITE_PROBE_S:
            return None
        probe = f"{self.prefix}.ghostly-health/{uuid.uuid4().hex}"
        try:
            await client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            await client.delete_object(Bucket=self.bucket, Key=probe)
        except Exception as exc:  # noqa: BLE001
            return f"content store {self.identity()} cannot be written: {_s3_error(exc, 'write')}"
        self._write_probed = time.monotonic()
        return None

    async def sweep_staging(self, older_than_s: float) -> int:
        """Local staging/read files of dead processes, and multipart uploads under the prefix
        that were started longer ago than ``older_than_s`` (a commit that never finished)."""
        removed = await asyncio.to_thread(self._sweep_local, older_than_s)
        cutoff = datetime.now(UTC).timestamp() - older_than_s
        try:
            client = await self._client()
            paginator = client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []) or []:
                    initiated = upload.get("Initiated")
                    if initiated is not None and initiated.timestamp() < cutoff:
                        with contextlib.suppress(Exception):
                            await client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
                            removed += 1
        except Exception as exc:
            raise _s3_error(exc, "sweep the unfinished uploads") from exc
        if removed:
            log.info("content store: removed %d stale staging files/uploads older than %.0f s", removed, older_than_s)
        return removed

    def _sweep_local(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            entries = list(os.scandir(self.staging_dir))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"content store: cannot sweep the local staging folder: {exc}") from exc
        for entry in entries:
            try:
                if entry.name.startswith(_STAGING_PREFIX) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
        return removed


class _Download(LocalPathContext):
    """``async with store.local_path(p) as path`` (services) or ``with ...`` (scripts): the
    object downloaded and verified into a temporary file, removed at the end."""

    def __init__(self, store: S3ContentStore, path: str):
        self.store, self.path = store, path
        self.local: Path | None = None

    async def __aenter__(self) -> Path:
        local = self.local = await self.store._download(self.path)
        return local

    async def __aexit__(self, *exc) -> None:
        self._remove()

    def __enter__(self) -> Path:
        local = self.local = self.store._run_sync(lambda: self.store._download(self.path))
        return local

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        if self.local is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.local)
            self.local = None


class _S3Staging(FileStaging):
    store: S3ContentStore

    async def commit(self, path: str) -> StoredObject:
        try:
            self.close()
        except OSError as exc:
            raise StoreError(f"content store: cannot write the upload to the staging folder: {exc}") from exc
        rel = validate_relative_path(path)
        digest = self.sha256
        if not await self.store._put_file(self.local, rel, self.size_bytes, digest):
            head = await self.store._head(rel)
            if head is None:  # removed between the refused write and the look: write again
                if not await self.store._put_file(self.local, rel, self.size_bytes, digest):
                    raise StoreConflict(f"content store: {rel!r} is being written concurrently")
            elif await self.store._sha256_of(rel, head) != digest:
                raise StoreConflict(
                    f"content store: {rel!r} already holds different bytes (stored files are immutable)"
                )
        return StoredObject(rel, self.size_bytes, digest)
