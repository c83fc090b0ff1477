"""`ghostly sessions list|show` (StatisticsService) and `ghostly outcome` (IngestService).

    ghostly sessions list [--patient P005] [--limit 20]
    ghostly sessions show SESSION_ID
    ghostly outcome SESSION_ID [--rpe 5] [--game-points 600] [--game-points-max 1000] [--bfr-aop 50]

Amplitudes are printed in uV (the API carries volts), rates in %, scores 0-100, times in UTC.
"""

from __future__ import annotations

import argparse

from app.client.common import (
    CommandError,
    add_timeout,
    command,
    exclusions,
    num,
    optional,
    rate,
    score,
    session_type_word,
    status_word,
    table,
    uv,
    when,
)

DEFAULT_LIMIT = 20


# --------------------------------------------------------------------------- shared with `patients show`


def recent_sessions(client, patient: str = "", limit: int = DEFAULT_LIMIT) -> list:
    """Newest sessions (ListSessions, paged up to `limit`)."""
    from ghostly.statistics.v1 import statistics_pb2 as spb

    sessions: list = []
    token = ""
    while len(sessions) < limit:
        page = client.statistics.ListSessions(
            spb.ListSessionsRequest(patient_id=patient, page_size=min(500, limit - len(sessions)), page_token=token)
        )
        sessions += page.sessions
        token = page.next_page_token
        if not token:
            break
    return sessions[:limit]


def scores_of(client, sessions) -> dict[str, float | None]:
    """session id -> overall score, in one BatchGetSessionStatistics round trip (ListSessions
    carries no score)."""
    from ghostly.statistics.v1 import statistics_pb2 as spb

    ids = [s.id for s in sessions]
    found: dict[str, float | None] = {}
    for i in range(0, len(ids), 500):
        reply = client.statistics.BatchGetSessionStatistics(
            spb.BatchGetSessionStatisticsRequest(session_ids=ids[i : i + 500])
        )
        for s in reply.sessions:
            found[s.session.id] = s.performance.overall_performance_score if s.HasField("performance") else None
    return found


def session_lines(client, sessions) -> list[str]:
    if not sessions:
        return ["(no sessions)"]
    scores = scores_of(client, sessions)
    rows = [
        [
            s.id,
            when(s.session_date),
            s.patient_id,
            session_type_word(s.session_type),
            str(s.protocol_day or "-"),
            status_word(s.processing_status),
            score(scores.get(s.id)),
        ]
        for s in sessions
    ]
    return table(rows, ["SESSION", "DATE (UTC)", "PATIENT", "TYPE", "DAY", "STATUS", "SCORE"])


# --------------------------------------------------------------------------- sessions list / show


@command
def run_list(args, client) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be >= 1")
    for line in session_lines(client, recent_sessions(client, args.patient or "", args.limit)):
        print(line)
    return 0


def _signal_warnings(channels) -> list[str]:
    out = []
    for ch in channels:
        if ch.HasField("usable") and not ch.usable:
            out.append(f"{ch.channel_name}: no usable EMG, excluded from scoring (check the electrode)")
        elif "weak_signal" in ch.signal_flags:
            out.append(f"{ch.channel_name}: weak signal")
        for flag, text in (
            ("mains_interference", "mains interference (notch applied)"),
            ("saturation", "saturation (clipped samples masked)"),
            ("dropout", "dropouts (constant fills masked)"),
            ("partially_masked", "contractions partly lost to artefacts"),
        ):
            if flag in ch.signal_flags:
                out.append(f"{ch.channel_name}: {text}")
    return out


@command
def run_show(args, client) -> int:
    import grpc

    from ghostly.statistics.v1 import statistics_pb2 as spb

    key = spb.SessionKey(session_id=args.session_id)
    s = client.statistics.GetSession(spb.GetSessionRequest(session_id=args.session_id))
    try:
        perf = client.statistics.GetPerformanceScore(key)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        perf = None
    channels = client.statistics.GetEmgStatistics(spb.GetEmgStatisticsRequest(session_id=args.session_id)).channels
    try:
        settings = client.statistics.GetSessionSettings(key)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        settings = None

    print(f"session     {s.id}")
    print(f"patient     {s.patient_id}   therapist {s.therapist_id or '-'}")
    date = when(s.session_date)
    print(
        f"date        {date}{' UTC' if date != '-' else ''}   type {session_type_word(s.session_type)}   "
        f"day {s.protocol_day or '-'}   duration {num(s.original_duration_seconds or None, '.1f', ' s')}"
    )
    print(f"file        {s.file_path}")
    print(
        f"status      {status_word(s.processing_status)}   processing {s.processing_version or '-'}"
        + (f"   error: {s.error_message}" if s.error_message else "")
    )
    if settings is not None and settings.calibration_id:
        sources = ", ".join(f"{k} {v}" for k, v in sorted(settings.value_sources.items()))
        print(
            f"calibration {settings.calibration_id} ({settings.calibration_source})"
            + (f"   values from: {sources}" if sources else "")
        )

    print()
    if perf is None:
        print("score       not scored")
    else:
        print(
            f"score       {score(perf.overall_performance_score)}   compliance {score(optional(perf, 'compliance_score'))}   "
            f"symmetry {score(optional(perf, 'symmetry_score'))}   effort {score(optional(perf, 'effort_score'))}   "
            f"game {score(optional(perf, 'game_score'))}"
        )
        w = perf.effective_weights
        print(
            f"weights     compliance {w.compliance:.2f}  symmetry {w.symmetry:.2f}  effort {w.effort:.2f}  "
            f"game {w.game:.2f}   scoring config v{perf.scoring_config_version or '-'}"
        )
        print(f"excluded    {exclusions(perf.excluded_components)}")
        print(
            f"inputs      RPE {num(optional(perf, 'rpe_post_session'))}   game points "
            f"{perf.game_points_achieved}/{perf.game_points_maximum}   BFR "
            f"{num(optional(perf, 'bfr_pressure_aop'), 'g', ' % AOP')}"
            + (
                ""
                if not perf.HasField("bfr_compliance_gate")
                else f" (gate {'passed' if perf.bfr_compliance_gate >= 1 else 'failed'})"
            )
        )
        if perf.HasField("outcome"):
            print(f"outcome     recorded by {perf.outcome.recorded_by or '-'} at {when(perf.outcome.recorded_at)} UTC")

    print()
    if channels:
        rows = [
            [
                ch.channel_name,
                ch.side or "-",
                uv(ch.mvc_rms_value),
                uv(ch.mvc_peak_value),
                ch.mvc_calculation_method or "-",
                str(ch.total_contractions),
                f"{ch.good_contractions_intensity}/{ch.good_contractions_duration}/{ch.good_contractions_both}",
                rate(ch.completion_rate),
                rate(ch.intensity_rate),
                rate(ch.duration_rate),
                rate(ch.muscle_compliance_score),
                ",".join(ch.signal_flags) or "-",
            ]
            for ch in channels
        ]
        for line in table(
            rows,
            [
                "CHANNEL",
                "SIDE",
                "MVC uV",
                "PEAK uV",
                "MVC FROM",
                "CONTR",
                "GOOD I/D/BOTH",
                "COMPL",
                "INTENS",
                "DUR",
                "MUSCLE",
                "FLAGS",
            ],
        ):
            print(line)
    else:
        print("no EMG statistics")

    warnings = _signal_warnings(channels)
    if perf is not None:
        warnings += [f"{k} excluded from the score: {v}" for k, v in sorted(perf.excluded_components.items())]
    if warnings:
        print()
        for w in warnings:
            print(f"warning: {w}")
    return 0


# --------------------------------------------------------------------------- outcome


@command
def run_outcome(args, client) -> int:
    from ghostly.ingest.v1 import ingest_pb2

    fields = {
        k: v
        for k, v in (
            ("rpe_post_session", args.rpe),
            ("game_points", args.game_points),
            ("game_points_max", args.game_points_max),
        )
        if v is not None
    }
    if args.bfr_aop is not None:
        fields["bfr"] = ingest_pb2.BfrInput(actual_pressure_aop=args.bfr_aop)
    if not fields:
        raise CommandError("nothing to record: give --rpe, --game-points, --game-points-max or --bfr-aop")
    reply = client.ingest.RecordSessionOutcome(
        ingest_pb2.RecordSessionOutcomeRequest(session_id=args.session_id, **fields)
    )
    print(f"session     {reply.session_id}")
    print(f"changed     {'yes' if reply.changed else 'no (same values as already recorded)'}")
    print(
        f"score       {score(optional(reply, 'overall_performance_score'))}"
        + ("" if reply.HasField("overall_performance_score") else " (not scorable)")
        + f"   scoring config v{reply.scoring_config_version or '-'}"
    )
    print(f"excluded    {exclusions(reply.components_excluded)}")
    print(
        f"recorded    RPE {num(optional(reply, 'rpe_post_session'))}   game points "
        f"{num(optional(reply, 'game_points'))}/{num(optional(reply, 'game_points_max'))}   BFR "
        f"{num(optional(reply, 'bfr_actual_pressure_aop'), 'g', ' % AOP')}   by {reply.recorded_by or '-'} "
        f"at {when(reply.recorded_at)} UTC"
    )
    return 0


# --------------------------------------------------------------------------- parsers

HELP = {
    "sessions": "list sessions / show one session's scores, muscle statistics and flags",
    "outcome": "record a session's RPE, game points or BFR pressure and re-score it",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sessions", help=HELP["sessions"], description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="sessions_command", required=True, metavar="{list,show}")
    q = sub.add_parser("list", help="newest sessions: id, date, patient, status, score (ListSessions)")
    q.add_argument("--patient", metavar="CODE", help="only this patient's sessions")
    q.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N sessions, newest first (default {DEFAULT_LIMIT})",
    )
    add_timeout(q)
    q.set_defaults(func=run_list)
    q = sub.add_parser("show", help="one session: scores, per-muscle statistics (uV), signal flags, warnings")
    q.add_argument("session_id", metavar="SESSION_ID")
    add_timeout(q)
    q.set_defaults(func=run_show)

    p = subparsers.add_parser(
        "outcome",
        help=HELP["outcome"],
        description="Record post-session data (RecordSessionOutcome): only the values "
        "given change; the session is re-scored from its statistics.",
    )
    p.add_argument("session_id", metavar="SESSION_ID")
    p.add_argument("--rpe", type=int, metavar="N", help="post-session Borg CR10 RPE, 0-10")
    p.add_argument("--game-points", type=int, metavar="N", help="game points achieved")
    p.add_argument("--game-points-max", type=int, metavar="N", help="maximum points at the played level")
    p.add_argument(
        "--bfr-aop",
        type=float,
        metavar="X",
        help="measured BFR cuff pressure, %% of arterial occlusion pressure (replaces the session's BFR record)",
    )
    add_timeout(p)
    p.set_defaults(func=run_outcome)
