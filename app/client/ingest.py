"""`ghostly ingest PATH... [--patient P005]`: upload files or folders through the gRPC API.

One line per file as it completes (new / duplicate / failed, session id, status, score), its
warnings indented below it, and the summary line at the end. Exit code 0, 1 when any file
failed, 2 for a bad path.

grpc and the generated code are imported when the command runs, not when the parser is built
(start-up time of the `ghostly` CLI).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from libs.convert import SESSION_TYPE

CHUNK = 1 << 20
SESSION_TYPES = tuple(SESSION_TYPE)  # the database names, in the enum order


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


def requests(path: Path, patient: str, **session):
    from ghostly.ingest.v1 import ingest_pb2

    yield ingest_pb2.UploadRequest(
        metadata=ingest_pb2.UploadMetadata(
            file_name=path.name,
            expected_size_bytes=path.stat().st_size,
            session=ingest_pb2.SessionMetadata(patient_code=patient, **session),
        )
    )
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield ingest_pb2.UploadRequest(chunk=chunk)


def describe(path: Path, reply) -> list[str]:
    """The result of one upload: `new|duplicate  PATH  session ID  STATUS  score X`, then its warnings."""
    from app.client.common import score, status_word

    kind = "new" if reply.created else "duplicate"
    value = reply.overall_performance_score if reply.HasField("overall_performance_score") else None
    lines = [f"{kind:<10} {path}  session {reply.session_id}  {status_word(reply.status)}  score {score(value)}"]
    lines += [f"           warning: {w}" for w in reply.warnings]
    return lines


async def ingest_files(
    address: str, files: list[Path], patient: str | None, concurrency: int, progress=None, report=None, **session
) -> dict[str, list]:
    """Upload files; returns {'new': [(path, reply)], 'duplicate': [(path, reply)],
    'failed': [(path, message)]}. `report(lines)` is called as each file completes."""
    import grpc

    from app.client.common import rpc_error_line
    from ghostly.ingest.v1 import ingest_pb2_grpc
    from libs import auth

    summary: dict[str, list] = {"new": [], "duplicate": [], "failed": []}
    gate = asyncio.Semaphore(concurrency)
    from libs import config as config_mod
    from libs.tls import aio_channel

    async with aio_channel(address, config_mod.load().tls) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)

        async def one(path: Path):
            code = patient or path.parent.name
            async with gate:
                try:
                    reply = await stub.Upload(
                        requests(path, code, **session), timeout=300, metadata=auth.client_metadata()
                    )
                    summary["new" if reply.created else "duplicate"].append((path, reply))
                    lines = describe(path, reply)
                except grpc.aio.AioRpcError as exc:
                    message = rpc_error_line(exc)
                    summary["failed"].append((path, message))
                    lines = [f"failed     {path}: {message}"]
                if report is not None:
                    report(lines)
                if progress is not None:
                    progress.update(1)

        await asyncio.gather(*(one(f) for f in files))
    return summary


def run_ingest(args) -> int:
    from tqdm import tqdm

    from libs import config as config_mod

    try:
        files = collect(args.paths)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session = {}
    if args.session_type:
        from ghostly.common.v1 import common_pb2

        session["session_type"] = common_pb2.SessionType.Value(f"SESSION_TYPE_{args.session_type.upper()}")
    address = args.address or config_mod.load().target("ingest")
    with tqdm(total=len(files), unit="file", file=sys.stderr, disable=not files) as bar:

        def report(lines: list[str]) -> None:
            for line in lines:
                bar.write(line, file=sys.stdout)
            sys.stdout.flush()

        summary = asyncio.run(ingest_files(address, files, args.patient, args.concurrency, bar, report, **session))
    print(f"{len(summary['new'])} new, {len(summary['duplicate'])} duplicate, {len(summary['failed'])} failed")
    return 1 if summary["failed"] else 0


HELP = "upload C3D files or folders to the ingest service"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest", help=HELP, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="+", help="C3D files or folders (searched recursively)")
    p.add_argument("--patient", help="patient code for every file (default: each file's folder name)")
    p.add_argument(
        "--type",
        dest="session_type",
        choices=SESSION_TYPES,
        help="session type of every file (e.g. assessment, for `ghostly patients calibrate --from-session`)",
    )
    p.add_argument("--address", help="ingest service host:port (default from GHOSTLY_INGEST_ADDRESS / _PORT)")
    p.add_argument("--concurrency", type=int, default=4, help="uploads in flight (default 4)")
    p.set_defaults(func=run_ingest)
