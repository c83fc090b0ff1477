"""`ghostly patients ...` and `ghostly therapists add`: the patient registry and per-patient
calibration (writes: ingest's PatientService; reads: StatisticsService).

    ghostly therapists add --user-id UUID --first Tess --last Therapist
    ghostly patients add P005 --first Pat --last Ient --dob 1940-01-01 --therapist THERAPIST_ID
    ghostly patients list [--therapist THERAPIST_ID] [--all]
    ghostly patients show P005
    ghostly patients calibrate P005 --mvc-left 400 --mvc-right 380 --duration-left 2 --target 12
    ghostly patients calibrate P005 --from-session SESSION_ID
    ghostly patients deactivate P005

MVCs are given and shown in uV of the RMS envelope (the API stores volts). A new calibration
applies to sessions ingested from then on; sessions already analysed keep their values.
"""

from __future__ import annotations

import argparse

from app.client.common import (
    CommandError,
    add_timeout,
    calibration_source_word,
    command,
    num,
    optional,
    table,
    uv,
    when,
)

# --------------------------------------------------------------------------- formatting


def _patient_line(p) -> str:
    state = "active" if p.active else f"deactivated {when(p.deactivated_at)} UTC"
    return f"patient     {p.patient_code}   {p.first_name} {p.last_name}   born {p.date_of_birth or '-'}   {state}"


def calibration_values(c) -> str:
    """'MVC L 400.0 uV  R - ; duration L 2 s  R 2 s ; target 12 ; BFR target 50 % AOP' ('-': not set)."""

    def value(field: str, fmt, unit: str) -> str:
        v = optional(c, field)
        return "-" if v is None else f"{fmt(v)} {unit}".rstrip()

    return (
        f"MVC L {value('mvc_left_v', uv, 'uV')}  R {value('mvc_right_v', uv, 'uV')}   "
        f"duration L {value('duration_threshold_left_s', num, 's')}  "
        f"R {value('duration_threshold_right_s', num, 's')}   "
        f"target {value('target_contractions', num, '')}   "
        f"BFR target {value('bfr_target_pressure_aop', num, '% AOP')}"
    )


def _calibration_lines(c) -> list[str]:
    source = calibration_source_word(c.source)
    origin = f" from session {c.source_session_id}" if c.source_session_id else ""
    lines = [
        f"calibration {c.id}   {source}{origin}   {when(c.created_at)} UTC by {c.created_by or '-'}"
        + (f" ({c.created_by_role})" if c.created_by_role else ""),
        f"  {calibration_values(c)}",
    ]
    if c.rule:
        lines.append(f"  rule: {c.rule}")
    if c.notes:
        lines.append(f"  notes: {c.notes}")
    return lines


# --------------------------------------------------------------------------- therapists


@command
def run_therapist_add(args, client) -> int:
    from ghostly.ingest.v1 import ingest_pb2

    t = client.patients.CreateTherapist(
        ingest_pb2.CreateTherapistRequest(user_id=args.user_id, first_name=args.first, last_name=args.last)
    )
    print(f"therapist   {t.id}   {t.first_name} {t.last_name}   user {t.user_id}")
    print(f"(register patients with: ghostly patients add CODE ... --therapist {t.id})")
    return 0


# --------------------------------------------------------------------------- patients


@command
def run_add(args, client) -> int:
    from ghostly.ingest.v1 import ingest_pb2

    p = client.patients.CreatePatient(
        ingest_pb2.CreatePatientRequest(
            patient_code=args.code or "",
            therapist_id=args.therapist or "",
            first_name=args.first,
            last_name=args.last,
            date_of_birth=args.dob,
        )
    )
    print(_patient_line(p))
    print(f"therapist   {p.therapist_id}")
    return 0


@command
def run_list(args, client) -> int:
    from ghostly.statistics.v1 import statistics_pb2 as spb

    patients, token = [], ""
    while True:
        page = client.statistics.ListPatients(
            spb.ListPatientsRequest(
                therapist_id=args.therapist or "", include_inactive=args.all, page_size=500, page_token=token
            )
        )
        patients += page.patients
        token = page.next_page_token
        if not token:
            break
    if not patients:
        print("(no patients)")
        return 0
    rows = []
    for p in patients:
        c = p.current_calibration if p.HasField("current_calibration") else None
        mvc = "-" if c is None else f"{uv(optional(c, 'mvc_left_v'))} / {uv(optional(c, 'mvc_right_v'))}"
        rows.append(
            [
                p.patient_code,
                f"{p.first_name} {p.last_name}",
                p.date_of_birth or "-",
                "yes" if p.active else "no",
                str(p.session_count),
                mvc,
                p.therapist_id or "-",
            ]
        )
    for line in table(rows, ["CODE", "NAME", "BORN", "ACTIVE", "SESSIONS", "MVC L / R uV", "THERAPIST"]):
        print(line)
    return 0


@command
def run_show(args, client) -> int:
    from app.client.sessions import recent_sessions, session_lines
    from ghostly.statistics.v1 import statistics_pb2 as spb

    p = client.statistics.GetPatient(spb.GetPatientRequest(patient_code=args.code))
    history = client.statistics.ListPatientCalibrations(
        spb.ListPatientCalibrationsRequest(patient_code=args.code)
    ).calibrations
    sessions = recent_sessions(client, args.code, args.limit)
    print(_patient_line(p))
    print(f"therapist   {p.therapist_id or '-'}")
    print(f"registered  {when(p.created_at)} UTC   sessions {p.session_count}")
    print()
    print("current calibration")
    if p.HasField("current_calibration"):
        print("\n".join("  " + line for line in _calibration_lines(p.current_calibration)))
    else:
        print("  none (each session's own values or the backend estimate are used)")
    print()
    print(f"calibration history ({len(history)}, newest first)")
    rows = [
        [
            when(c.created_at),
            calibration_source_word(c.source),
            uv(optional(c, "mvc_left_v")),
            uv(optional(c, "mvc_right_v")),
            num(optional(c, "duration_threshold_left_s")),
            num(optional(c, "duration_threshold_right_s")),
            num(optional(c, "target_contractions")),
            num(optional(c, "bfr_target_pressure_aop")),
            c.source_session_id or "-",
            c.id,
        ]
        for c in history
    ]
    if rows:
        for line in table(
            rows,
            [
                "CREATED (UTC)",
                "SOURCE",
                "MVC L uV",
                "MVC R uV",
                "DUR L s",
                "DUR R s",
                "TARGET",
                "BFR %AOP",
                "FROM SESSION",
                "ID",
            ],
        ):
            print("  " + line)
    else:
        print("  (none)")
    print()
    print(f"recent sessions (newest {args.limit})")
    for line in session_lines(client, sessions):
        print("  " + line)
    return 0


MANUAL = (
    ("mvc_left", "mvc_left_v"),
    ("mvc_right", "mvc_right_v"),
    ("duration_left", "duration_threshold_left_s"),
    ("duration_right", "duration_threshold_right_s"),
    ("target", "target_contractions"),
    ("bfr_target", "bfr_target_pressure_aop"),
)


def _volts(option: str, microvolts: float) -> float:
    # 0.0004 is a value in volts: refuse rather than guess (as `ghostly analyze` does).
    if not 1.0 <= microvolts <= 1e5:
        raise CommandError(f"--{option} is in uV of the RMS envelope (1-100000, e.g. 400), got {microvolts:g}")
    return microvolts * 1e-6


@command
def run_calibrate(args, client) -> int:
    from ghostly.ingest.v1 import ingest_pb2

    manual = {field: getattr(args, opt) for opt, field in MANUAL if getattr(args, opt) is not None}
    if args.from_session:
        if manual:
            raise CommandError(
                "--from-session derives the MVCs from the session and carries the other values "
                "over: give either --from-session or values, not both"
            )
        from ghostly.statistics.v1 import statistics_pb2 as spb

        # CalibrateFromSession names only the session: make sure it is this patient's.
        session = client.statistics.GetSession(spb.GetSessionRequest(session_id=args.from_session))
        if session.patient_id != args.code:
            raise CommandError(f"session {args.from_session} belongs to patient {session.patient_id}, not {args.code}")
        c = client.patients.CalibrateFromSession(
            ingest_pb2.CalibrateFromSessionRequest(
                session_id=args.from_session,
                top_n=args.top_n or 0,
                allow_any_session_type=args.any_session_type,
                notes=args.notes or "",
            ),
            timeout=max(args.timeout, 60.0),
        )
    else:
        if not manual:
            raise CommandError(
                "nothing to calibrate: give --mvc-left/--mvc-right (uV), --duration-left/"
                "--duration-right (s), --target, --bfr-target or --from-session"
            )
        for opt, field in MANUAL[:2]:
            if field in manual:
                manual[field] = _volts(opt.replace("_", "-"), manual[field])
        c = client.patients.SetPatientCalibration(
            ingest_pb2.SetPatientCalibrationRequest(patient_code=args.code, notes=args.notes or "", **manual)
        )
    print(f"patient     {c.patient_code}: new current calibration")
    for line in _calibration_lines(c):
        print(line)
    print("(applies to sessions ingested from now on; sessions already analysed keep their values)")
    return 0


@command
def run_deactivate(args, client) -> int:
    from ghostly.ingest.v1 import ingest_pb2

    p = client.patients.DeactivatePatient(ingest_pb2.DeactivatePatientRequest(patient_code=args.code))
    print(_patient_line(p))
    print("(history kept; new files of this patient are still ingested, with a warning)")
    return 0


# --------------------------------------------------------------------------- parsers

HELP = {
    "patients": "patient registry: add, list, show, calibrate, deactivate",
    "therapists": "register a therapist (admin)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "patients", help=HELP["patients"], description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="patients_command", required=True, metavar="{add,list,show,calibrate,deactivate}")

    q = sub.add_parser("add", help="register a patient (CreatePatient)")
    q.add_argument(
        "code",
        nargs="?",
        metavar="CODE",
        help="patient code, e.g. P005 (letters, digits, '-', '_'; omitted: generated)",
    )
    q.add_argument("--first", required=True, metavar="NAME", help="given name")
    q.add_argument("--last", required=True, metavar="NAME", help="family name")
    q.add_argument("--dob", required=True, metavar="YYYY-MM-DD", help="date of birth")
    q.add_argument(
        "--therapist",
        metavar="UUID",
        help="therapists.id (as printed by `ghostly therapists add`); required for admins, "
        "a therapist's own caseload otherwise",
    )
    add_timeout(q)
    q.set_defaults(func=run_add)

    q = sub.add_parser("list", help="registered patients with their current MVCs (ListPatients)")
    q.add_argument("--therapist", metavar="UUID", help="only this therapist's patients")
    q.add_argument("--all", action="store_true", help="include deactivated patients")
    add_timeout(q)
    q.set_defaults(func=run_list)

    q = sub.add_parser("show", help="a patient, current calibration, calibration history, recent sessions")
    q.add_argument("code", metavar="CODE")
    q.add_argument("--limit", type=int, default=10, metavar="N", help="recent sessions shown (default 10)")
    add_timeout(q)
    q.set_defaults(func=run_show)

    q = sub.add_parser(
        "calibrate",
        help="new current calibration: values (SetPatientCalibration) or derived "
        "from an assessment session (CalibrateFromSession)",
        description="Values left out are carried over from the current calibration.",
    )
    q.add_argument("code", metavar="CODE")
    q.add_argument("--mvc-left", type=float, metavar="UV", help="MVC of the left quadriceps (CH1), uV RMS envelope")
    q.add_argument("--mvc-right", type=float, metavar="UV", help="MVC of the right quadriceps (CH2), uV RMS envelope")
    q.add_argument("--duration-left", type=float, metavar="S", help="good-duration threshold left, seconds")
    q.add_argument("--duration-right", type=float, metavar="S", help="good-duration threshold right, seconds")
    q.add_argument("--target", type=int, metavar="N", help="contractions expected per muscle")
    q.add_argument("--bfr-target", type=float, metavar="AOP", help="BFR target pressure, %% AOP")
    q.add_argument(
        "--from-session",
        metavar="SESSION_ID",
        help="derive the MVCs from this assessment session (median peak of the strongest uncorrupted contractions)",
    )
    q.add_argument("--top-n", type=int, metavar="N", help="with --from-session: contractions per muscle (default 3)")
    q.add_argument(
        "--any-session-type",
        action="store_true",
        help="with --from-session: accept a session that is not of type assessment",
    )
    q.add_argument("--notes", metavar="TEXT", help="free-text note stored with the calibration")
    add_timeout(q)
    q.set_defaults(func=run_calibrate)

    q = sub.add_parser("deactivate", help="mark a patient inactive (history kept)")
    q.add_argument("code", metavar="CODE")
    add_timeout(q)
    q.set_defaults(func=run_deactivate)

    p = subparsers.add_parser("therapists", help=HELP["therapists"])
    sub = p.add_subparsers(dest="therapists_command", required=True, metavar="{add}")
    q = sub.add_parser("add", help="register a therapist (CreateTherapist, admin/service only)")
    q.add_argument(
        "--user-id",
        required=True,
        metavar="UUID",
        help="auth user id of the therapist's account (the `sub` of their tokens)",
    )
    q.add_argument("--first", required=True, metavar="NAME", help="given name")
    q.add_argument("--last", required=True, metavar="NAME", help="family name")
    add_timeout(q)
    q.set_defaults(func=run_therapist_add)
