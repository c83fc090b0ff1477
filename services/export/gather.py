"""The data of an export, fetched from the services that own it: statistics from
StatisticsService (batched, or per session with bounded concurrency), signals streamed from
JitSignalService; each fetch returns an Outcome (the document, its validation checks and the
row counts the readback compares with)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ghostly.common.v1 import common_pb2
from ghostly.jit_signal.v1 import jit_signal_pb2 as jpb
from ghostly.statistics.v1 import statistics_pb2 as spb
from libs import errors
from libs.convert import to_timestamp
from services.export import layouts, writers
from services.export.downstream import CallOptions, Downstream
from services.export.model import Outcome, check
from services.export.request import KINDS, MAX_SESSIONS, Selection, maybe_uuid

STREAM_CHUNK_SAMPLES = 65_536  # JIT chunk size asked for (256 KiB of float32)
LIST_PAGE = 500
# Per-session failures that make a multi-session export partial; anything else (UNAVAILABLE,
# DEADLINE_EXCEEDED, INTERNAL) fails the whole export: a transient outage is retried, not
# silently turned into a smaller file.
BATCH = 500  # sessions per BatchGetSessionStatistics call (its maximum)
SESSION_ERRORS = (errors.NotFound, errors.FailedPrecondition, errors.InvalidArgument, errors.DataLoss)


def short_list(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


class Gatherer:
    """Fetches the data of one export's Selection from downstream."""

    def __init__(self, downstream: Downstream, session_concurrency: int = 16):
        self.downstream = downstream
        self.session_concurrency = session_concurrency  # GHOSTLY_EXPORT_SESSION_CONCURRENCY

    # ------------------------------------------------------------------ statistics types
    async def select_sessions(self, sel: Selection, call: CallOptions) -> list[layouts.SessionBundle]:
        if sel.session_ids:
            return [layouts.SessionBundle(s) for s in sel.session_ids]
        req = spb.ListSessionsRequest(
            patient_id=sel.patient_id,
            page_size=LIST_PAGE,
            processing_status=common_pb2.PROCESSING_STATUS_COMPLETED,
            date_from=to_timestamp(sel.date_from),
            date_to=to_timestamp(sel.date_to),
        )
        bundles: list[layouts.SessionBundle] = []
        while True:
            page = await self.downstream.list_sessions(req, call)
            bundles += [layouts.SessionBundle(s.id, session=s) for s in page.sessions]
            if len(bundles) > MAX_SESSIONS:
                raise errors.InvalidArgument(
                    f"the selection matches more than {MAX_SESSIONS:,} sessions; narrow the date window"
                )
            if not page.next_page_token:
                break
            req.page_token = page.next_page_token
        if not bundles:
            what = ", ".join(
                filter(
                    None,
                    [
                        f"patient_id={sel.patient_id!r}" if sel.patient_id else "",
                        f"date_from={sel.date_from.isoformat()}" if sel.date_from else "",
                        f"date_to={sel.date_to.isoformat()}" if sel.date_to else "",
                    ],
                )
            )
            raise errors.NotFound(f"no completed sessions match {what}")
        bundles.reverse()  # oldest first: reads as a timeline
        return bundles

    async def fetch_session(self, b: layouts.SessionBundle, sel: Selection, call: CallOptions) -> None:
        d = self.downstream
        t = sel.export_type
        sid = b.session_id

        async def optional(coro):
            try:
                return await coro
            except errors.NotFound:
                return None

        jobs: dict[str, Any] = {}
        if b.session is None:
            jobs["session"] = d.get_session(sid, call)
        if t in ("statistics_only", "clinical_summary"):
            jobs["channels"] = d.emg_statistics(sid, sel.channels, call)
        if t in ("performance_report", "clinical_summary"):
            # A completed session may be unscored (no usable EMG): exported with empty score
            # cells, its channel rows and flags saying why (checked below).
            jobs["performance"] = optional(d.performance(sid, call))
        if t == "bfr_safety_report":
            jobs["bfr"] = optional(d.bfr(sid, call))
            jobs["settings"] = optional(d.settings(sid, call))
            jobs["performance"] = optional(d.performance(sid, call))
        try:
            results = await gather_all(jobs)
        except SESSION_ERRORS as exc:
            b.error, b.error_code = str(exc), exc.__class__.__name__
            return
        if "session" in results:
            b.session = results["session"]
        session = b.session
        assert session is not None  # given by the listing or fetched above
        b.channels = list(results["channels"].channels) if "channels" in results else None
        b.performance = results.get("performance")
        b.bfr = results.get("bfr")
        b.settings = results.get("settings")
        status = common_pb2.ProcessingStatus.Name(session.processing_status).removeprefix("PROCESSING_STATUS_").lower()
        reason = f": {session.error_message}" if session.error_message else ""
        if t in ("statistics_only", "clinical_summary") and not b.channels:
            b.error = f"session {sid} has no EMG statistics (processing status {status}{reason})"
            b.error_code = "FailedPrecondition"
        elif t in ("performance_report", "clinical_summary") and b.performance is None and status != "completed":
            b.error = f"session {sid} has no performance score (processing status: {status}{reason})"
            b.error_code = "NotFound"

    async def fetch_batch(self, bundles: list[layouts.SessionBundle], sel: Selection, call: CallOptions) -> None:
        """Statistics, performance and registry rows of many sessions in batches of BATCH
        (one StatisticsService call each instead of three per session)."""
        todo = []
        for b in bundles:
            if maybe_uuid(b.session_id) is None:
                b.error, b.error_code = f"session_id must be a UUID, got {b.session_id[:80]!r}", "InvalidArgument"
            else:
                todo.append(b)
        t = sel.export_type
        for i in range(0, len(todo), BATCH):
            part = todo[i : i + BATCH]
            reply = await self.downstream.batch_statistics([b.session_id for b in part], sel.channels, call)
            found = {item.session.id: item for item in reply.sessions}
            for b in part:
                item = found.get(str(maybe_uuid(b.session_id)))
                if item is None:
                    b.error, b.error_code = f"session {b.session_id} does not exist", "NotFound"
                    continue
                b.session = b.session or item.session
                b.channels = list(item.channels)
                b.performance = item.performance if item.HasField("performance") else None
                status = (
                    common_pb2.ProcessingStatus.Name(b.session.processing_status)
                    .removeprefix("PROCESSING_STATUS_")
                    .lower()
                )
                reason = f": {b.session.error_message}" if b.session.error_message else ""
                missing = set(sel.channels) - {c.channel_name for c in b.channels}
                if t in ("statistics_only", "clinical_summary") and sel.channels and missing:
                    b.error = f"session {b.session.id} has no statistics for channel(s) {', '.join(sorted(missing))}"
                    b.error_code = "NotFound"
                elif t in ("statistics_only", "clinical_summary") and not b.channels:
                    b.error = f"session {b.session_id} has no EMG statistics (processing status {status}{reason})"
                    b.error_code = "FailedPrecondition"
                elif (
                    t in ("performance_report", "clinical_summary") and b.performance is None and status != "completed"
                ):  # completed + no score: not scorable, exported empty
                    b.error = f"session {b.session.id} has no performance score (processing status: {status}{reason})"
                    b.error_code = "NotFound"

    async def statistics(self, sel: Selection, call: CallOptions) -> Outcome:
        bundles = await self.select_sessions(sel, call)
        if sel.export_type == "bfr_safety_report":
            await bounded_gather(
                [functools.partial(self.fetch_session, b, sel, call) for b in bundles], self.session_concurrency
            )
        else:
            await self.fetch_batch(bundles, sel, call)
        ok = [b for b in bundles if b.error is None]
        failed = [b for b in bundles if b.error is not None]
        if not ok:
            first = failed[0]
            cls = getattr(errors, first.error_code or "", None) or errors.FailedPrecondition
            msg = (
                first.error
                if len(failed) == 1
                else f"none of the {len(failed)} sessions could be exported; first: {first.error}"
            )
            raise cls(msg)
        meta = {
            "selection": {k: v for k, v in sel.options().items() if k != "session_ids"}
            | {"sessions_requested": len(bundles), "sessions_exported": len(ok)},
            "units": layouts.UNIT_CONVENTIONS,
            "missing_sessions": [{"session_id": b.session_id, "reason": b.error} for b in failed],
        }
        doc = layouts.statistics_document(sel.export_type, bundles, meta)
        out = Outcome(doc, missing=[f"{b.session_id} ({b.error})" for b in failed])
        if len(bundles) == 1:
            out.session_id = bundles[0].session_id
        out.checks.append(
            check(
                "sessions_exported",
                not failed,
                f"{len(ok)} of {len(bundles)} sessions exported"
                + (f"; missing: {short_list(out.missing, 5)}" if failed else ""),
            )
        )
        # Expected rows come from the downstream replies, independently of the table builders;
        # the readback check compares them with what the rendered file holds.
        n_channels = sum(len(b.channels or ()) for b in ok)
        if sel.export_type == "statistics_only":
            out.expected_rows = {"statistics": n_channels}
        elif sel.export_type == "performance_report":
            out.expected_rows = {"performance": len(ok)}
        elif sel.export_type == "bfr_safety_report":
            out.expected_rows = {"bfr": len(ok)}
        else:
            out.expected_rows = {
                "sessions": len(ok),
                "channels": n_channels,
                "summary": sum(max(1, len(b.channels or ())) for b in ok),
            }
        if sel.export_type in ("statistics_only", "clinical_summary"):
            empty = [b.session_id for b in ok if not b.channels]
            out.checks.append(
                check(
                    "channels_non_empty",
                    not empty,
                    f"{n_channels} channel rows over {len(ok)} sessions"
                    + (f"; sessions without channels: {short_list(empty)}" if empty else ""),
                )
            )
            if sel.channels:
                lacking = [b.session_id for b in ok if set(sel.channels) - {c.channel_name for c in b.channels or ()}]
                out.checks.append(
                    check(
                        "channels_complete",
                        not lacking,
                        f"requested channels {', '.join(sel.channels)} present in every session"
                        if not lacking
                        else f"sessions lacking requested channels: {short_list(lacking)}",
                    )
                )
        return out

    # ------------------------------------------------------------------ signal types
    async def signals(self, sel: Selection, call: CallOptions) -> Outcome:
        sid = sel.session_ids[0]
        full = sel.export_type == "signals_research_full"
        session, listing = await asyncio.gather(
            self.downstream.get_session(sid, call), self.downstream.list_channels(sid, call)
        )
        available = {c.name: c for c in listing.channels}
        if not available:
            raise errors.FailedPrecondition(f"session {sid} has no muscle channels")
        unknown = [c for c in sel.channels if c not in available]
        if unknown:
            raise errors.NotFound(
                f"session {sid} has no channel(s) {', '.join(unknown)} (available: {', '.join(available)})"
            )
        channels = sel.channels or list(available)
        # Refuse an Excel export before any signal is processed when it cannot fit a sheet.
        per_channel = {
            c: (available[c].sample_count if full else min(sel.max_points, available[c].sample_count)) for c in channels
        }
        if sel.data_format == "excel":
            rows = max(per_channel.values()) if full else sum(per_channel.values()) * len(sel.kinds)
            try:
                writers.check_excel_rows({"signals": rows})
            except writers.FormatLimitError as exc:
                raise errors.InvalidArgument(str(exc)) from None

        collector = layouts.SignalCollector()

        async def stream(kind: str):
            req = jpb.StreamSignalsRequest(
                session_id=sid,
                channels=channels,
                kind=KINDS[kind],
                full_resolution=full,
                max_points=0 if full else sel.max_points,
                chunk_samples=STREAM_CHUNK_SAMPLES,
            )
            async for chunk in self.downstream.stream_signals(req, call):
                collector.add(kind, chunk)

        await asyncio.gather(*(stream(k) for k in sel.kinds))
        traces = collector.traces(channels, sel.kinds)
        info = {k: collector.infos.get(k) for k in sel.kinds}
        first = next((i for i in info.values() if i is not None), None)
        rate = available[channels[0]].sample_rate_hz
        meta = {
            "session": {
                "session_id": session.id,
                "session_label": session.session_label,
                "patient_id": session.patient_id,
                "session_date": layouts.iso(session.session_date),
                "source_file": session.file_path,
                "source_file_sha256": session.file_hash,
                "source_file_size_bytes": session.file_size_bytes,
            },
            "units": {"values": "V", "time": "s", "sample_rate": "Hz"},
            "processing": {
                "processing_version": first.processing_version if first else session.processing_version,
                "sample_rate_hz": rate,
                "full_resolution": full,
                "downsampling": "none" if full else (first.downsampling if first else "minmaxlttb"),
                "max_points": None if full else sel.max_points,
                "window_start_s": first.t_start_s if first else None,
                "window_end_s": first.t_end_s if first else None,
                "window_sample_count": first.window_sample_count if first else None,
                "cache_hit": {k: i.cache_hit for k, i in info.items() if i is not None},
                "signal_kinds": {k: layouts.SIGNAL_KINDS[k] for k in sel.kinds},
                "time_base": "t = sample_index / sample_rate_hz (s from the first analog sample)",
                "value_encoding": "float32 as processed; text formats use the shortest decimal that "
                "round-trips to the same float32",
            },
            "channels": [
                {
                    "name": c,
                    "raw_label": available[c].raw_label,
                    "side": available[c].side,
                    "unit": available[c].unit or "V",
                    "sample_count": available[c].sample_count,
                    "duration_s": available[c].duration_s,
                }
                for c in channels
            ],
        }
        doc = layouts.signals_document(sel.export_type, traces, full, meta)
        signals = doc.signals
        assert signals is not None  # a signals document always has its SignalSet
        out = Outcome(doc, session_id=sid)
        expected = [(c, k) for c in channels for k in sel.kinds]
        got = {(t.channel, t.kind): t for t in traces}
        missing = [f"{c}/{k}" for c, k in expected if (c, k) not in got]
        empty = [t.label for t in traces if len(t.values) == 0]
        out.checks.append(
            check(
                "channels_non_empty",
                not missing and not empty,
                f"{len(traces)} of {len(expected)} channel/kind traces with data"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; empty: {', '.join(empty)}" if empty else ""),
            )
        )
        short = [
            f"{t.label} {len(t.values)}/{t.expected_points}"
            for t in traces
            if (t.expected_points is not None and len(t.values) != t.expected_points)
            or not collector.complete((t.channel, t.kind))
            or (t.sample_index is not None and len(t.sample_index) != len(t.values))
        ]
        out.checks.append(
            check(
                "points_complete",
                not short,
                "every trace has the points announced by JitSignalService "
                f"({', '.join(f'{t.label}={len(t.values)}' for t in traces)})"
                if not short
                else f"incomplete traces: {', '.join(short)}",
            )
        )
        nonfinite = {t.label: int((~np.isfinite(t.values)).sum()) for t in traces}
        bad = {k: v for k, v in nonfinite.items() if v}
        out.checks.append(
            check(
                "values_finite",
                not bad,
                "no NaN/inf values"
                if not bad
                else "non-finite values: " + ", ".join(f"{k}={v}" for k, v in bad.items()),
            )
        )
        if full:
            same = signals.same_time_base
            out.checks.append(
                check(
                    "same_time_base",
                    same,
                    "all traces share one time base" if same else "traces differ in start or length",
                )
            )
        out.expected_rows = {"signals": signals.rows_wide() if signals.same_time_base else signals.rows_long()}
        if missing:
            out.missing = [f"{sid} traces {', '.join(missing)}"]
        return out


async def bounded_gather(factories: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run coroutine factories with at most `limit` in flight; the first exception cancels the rest and
    is raised (an UNAVAILABLE downstream stops a 1,000-session export at once)."""
    gate = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await factory()

    tasks = [asyncio.ensure_future(one(f)) for f in factories]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def gather_all(jobs: dict[str, Any]) -> dict[str, Any]:
    keys = list(jobs)
    values = await asyncio.gather(*jobs.values())
    return dict(zip(keys, values))
