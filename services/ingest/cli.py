"""`ghostly ingest PATH... [--patient P005]`: upload files or folders through the gRPC API."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

from ghostly.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from libs import auth
from libs import config as config_mod

CHUNK = 1 << 20


def collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() == ".c3d" and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


def requests(path: Path, patient: str):
    yield ingest_pb2.UploadRequest(metadata=ingest_pb2.UploadMetadata(
        file_name=path.name, expected_size_bytes=path.stat().st_size,
        session=ingest_pb2.SessionMetadata(patient_code=patient)))
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield ingest_pb2.UploadRequest(chunk=chunk)


async def ingest_files(address: str, files: list[Path], patient: str | None, concurrency: int,
                       progress=None) -> dict[str, list]:
    """Upload files; returns {'new': [...], 'duplicate': [...], 'failed': [(path, message)]}."""
    summary: dict[str, list] = {"new": [], "duplicate": [], "failed": []}
    gate = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)

        async def one(path: Path):
            code = patient or path.parent.name
            async with gate:
                try:
                    reply = await stub.Upload(requests(path, code), timeout=300, metadata=auth.client_metadata())
                    summary["new" if reply.created else "duplicate"].append((path, reply.session_id))
                except grpc.aio.AioRpcError as exc:
                    summary["failed"].append((path, f"{exc.code().name}: {exc.details()}"))
                if progress is not None:
                    progress.update(1)

        await asyncio.gather(*(one(f) for f in files))
    return summary


def run_ingest(args) -> int:
    from tqdm import tqdm
    try:
        files = collect(args.paths)
    except FileNotFoundError as exc:
        print(f"ghostly ingest: {exc}", file=sys.stderr)
        return 2
    address = args.address or config_mod.load().target("ingest")
    with tqdm(total=len(files), unit="file", file=sys.stderr, disable=not files) as bar:
        summary = asyncio.run(ingest_files(address, files, args.patient, args.concurrency, bar))
    for path, message in summary["failed"]:
        print(f"failed     {path}: {message}")
    print(f"{len(summary['new'])} new, {len(summary['duplicate'])} duplicate, {len(summary['failed'])} failed")
    return 1 if summary["failed"] else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ingest", help="upload C3D files or folders to the ingest service")
    p.add_argument("paths", nargs="+", help="C3D files or folders (searched recursively)")
    p.add_argument("--patient", help="patient code for every file (default: each file's folder name)")
    p.add_argument("--address", help="ingest service host:port (default from GHOSTLY_INGEST_PORT)")
    p.add_argument("--concurrency", type=int, default=4, help="uploads in flight (default 4)")
    p.set_defaults(func=run_ingest)
