"""`ghostly export`: download an export through ExportService, with a progress bar and a
SHA-256 check of the file against the `completed` message.

    ghostly export --type statistics_only --format csv --session UUID -o stats.csv
    ghostly export --type clinical_summary --format excel --patient P005 -o p005.xlsx
    ghostly export --type signals_research_full --format matlab --session UUID --kind raw --kind envelope -o s.mat

The file is written to FILE.part and renamed to FILE only when the stream completed and the
hash matched. CSV exports also get FILE.meta.json (units, processing parameters, columns), taken
from the export's audit record, because a tidy CSV has no room for them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path

from libs import auth
from libs import config as config_mod

# grpc and the generated code are imported when the command runs, not when the `ghostly`
# parser is built (start-up time of the CLI): the choices are plain names here.
TYPES = (
    "statistics_only",
    "performance_report",
    "signals_visualization",
    "signals_research_full",
    "clinical_summary",
    "bfr_safety_report",
)
FORMATS = ("json", "csv", "excel", "matlab")


def _pb():
    from ghostly.export.v1 import export_pb2

    return export_pb2


class ExportFailed(Exception):
    pass


def _timestamp(text: str):
    from google.protobuf.timestamp_pb2 import Timestamp

    d = dt.datetime.fromisoformat(text)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    ts = Timestamp()
    ts.FromDatetime(d)
    return ts


def build_request(args):
    pb = _pb()
    req = pb.CreateExportRequest(
        type=pb.ExportType.Value(f"EXPORT_TYPE_{args.type.upper()}"),
        format=pb.ExportFormat.Value(f"EXPORT_FORMAT_{args.format.upper()}"),
        session_ids=args.session or [],
        patient_id=args.patient or "",
        channels=args.channel or [],
        signal_kinds=args.kind or [],
        max_points=args.max_points or 0,
        exported_by=args.exported_by or "",
    )
    if args.date_from:
        req.date_from.CopyFrom(_timestamp(args.date_from))
    if args.date_to:
        req.date_to.CopyFrom(_timestamp(args.date_to))
    return req


async def download(
    address: str, request, out: Path, *, timeout: float | None = None, progress=None, sidecar: bool = True
):
    """Stream an export into `out` (atomically), verify size and SHA-256; returns `completed`
    (an ExportCompleted)."""

    from ghostly.export.v1 import export_pb2_grpc

    pb = _pb()
    part = out.with_name(out.name + ".part")
    digest, size = hashlib.sha256(), 0
    started = completed = None
    from libs import config as config_mod
    from libs.tls import aio_channel

    async with aio_channel(address, config_mod.load().tls) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        try:
            with open(part, "wb") as f:
                async for msg in stub.CreateExport(request, timeout=timeout, metadata=auth.client_metadata()):
                    body = msg.WhichOneof("body")
                    if body == "started":
                        started = msg.started
                    elif body == "data":
                        f.write(msg.data)
                        digest.update(msg.data)
                        size += len(msg.data)
                        if progress is not None:
                            progress.update(len(msg.data))
                    elif body == "completed":
                        completed = msg.completed
            if completed is None:
                raise ExportFailed("the stream ended without a `completed` message")
            if completed.size_bytes != size or completed.sha256 != digest.hexdigest():
                raise ExportFailed(
                    f"integrity check failed: received {size} bytes with sha256 {digest.hexdigest()}, "
                    f"server sent {completed.size_bytes} bytes with sha256 {completed.sha256}"
                )
            os.replace(part, out)
        finally:
            if part.exists():
                part.unlink()
        if sidecar and request.format == pb.EXPORT_FORMAT_CSV:
            record = await _find_record(stub, completed.export_id, request, timeout)
            if record is not None and record.export_options_json:
                options = json.loads(record.export_options_json)
                meta = {
                    "export_id": record.id,
                    "sha256": record.export_hash,
                    "file_name": started.file_name if started is not None else "",
                    **options.get("metadata", {}),
                }
                out.with_name(out.name + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return completed


async def _find_record(stub, export_id: str, request, timeout):
    import grpc

    pb = _pb()
    filters = pb.ListExportHistoryRequest(
        type=request.type,
        format=request.format,
        page_size=50,
        exported_by=request.exported_by,
        session_id=request.session_ids[0] if len(request.session_ids) == 1 else "",
    )
    try:
        for _ in range(5):  # newest first: the export just made is on the first page(s)
            page = await stub.ListExportHistory(filters, timeout=timeout or 30, metadata=auth.client_metadata())
            for r in page.records:
                if r.id == export_id:
                    return r
            if not page.next_page_token:
                return None
            filters.page_token = page.next_page_token
    except grpc.aio.AioRpcError:
        return None
    return None


def run_export(args) -> int:
    import grpc
    from tqdm import tqdm

    pb = _pb()
    address = args.address or config_mod.load().target("export")
    out = Path(args.output)
    try:
        request = build_request(args)
    except ValueError as exc:
        print(f"ghostly export: bad date: {exc}", file=sys.stderr)
        return 2
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, desc=out.name, disable=args.quiet) as bar:
        try:
            completed = asyncio.run(download(address, request, out, timeout=args.timeout, progress=bar))
        except grpc.aio.AioRpcError as exc:
            bar.close()
            print(f"ghostly export: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except ExportFailed as exc:
            bar.close()
            print(f"ghostly export: {exc}", file=sys.stderr)
            return 1
    status = {
        pb.EXPORT_STATUS_SUCCESS: "success",
        pb.EXPORT_STATUS_PARTIAL: "partial",
        pb.EXPORT_STATUS_FAILED: "failed",
    }.get(completed.status, "unknown")
    print(
        f"{out}  {completed.size_bytes} bytes  sha256 {completed.sha256} (verified)  status {status}  "
        f"export {completed.export_id}"
    )
    for c in completed.validation_checks:
        if not c.passed or args.verbose:
            print(f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
    return 0 if completed.status == pb.EXPORT_STATUS_SUCCESS else 3


HELP = "download a research / clinical export (audited)"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help=HELP, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--type", required=True, choices=list(TYPES))
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--session", action="append", metavar="UUID", help="session id (repeatable)")
    p.add_argument("--patient", help="patient code (clinical summary and other statistics types)")
    p.add_argument("--from", dest="date_from", metavar="ISO", help="session_date >= (e.g. 2025-03-01)")
    p.add_argument("--to", dest="date_to", metavar="ISO", help="session_date < (exclusive)")
    p.add_argument("--channel", action="append", metavar="CH", help="channel to include (repeatable; default all)")
    p.add_argument(
        "--kind", action="append", choices=["raw", "filtered", "envelope"], help="signal kind (repeatable; default raw)"
    )
    p.add_argument("--max-points", type=int, default=0, help="signals_visualization points per channel (1000)")
    p.add_argument("--exported-by", metavar="UUID", help="researcher id recorded in the audit trail")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--address", help="export service host:port (default from GHOSTLY_EXPORT_ADDRESS / _PORT)")
    p.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds (default 600)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="list every validation check")
    p.set_defaults(func=run_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ghostly")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
