"""The `ghostly` command: run the stack, migrate, check health, analyse files, and the
operator's clinical workflow (therapists, patients, calibration, sessions, outcomes).

Run the stack
    ghostly up                 database (embedded unless DATABASE_URL) + migrations + 4 services
    ghostly serve NAME         one service, as in production
    ghostly migrate [--to N]   apply migrations (manual ones, e.g. 008, only with --to)
    ghostly status             health of each service
    ghostly token --role R --subject ID   mint a local bearer token (clients send $GHOSTLY_TOKEN)
    ghostly migrate-legacy     move legacy c3d_metadata/analysis_results into the new schema

Clinical workflow (client commands: gRPC to the services at GHOSTLY_<NAME>_ADDRESS, default
127.0.0.1:<port>; they send $GHOSTLY_TOKEN; errors print "error: <STATUS>: <message>", exit 2)
    ghostly therapists add --user-id UUID --first NAME --last NAME
    ghostly patients add CODE --first NAME --last NAME --dob YYYY-MM-DD [--therapist UUID]
    ghostly patients list [--therapist UUID] [--all]
    ghostly patients show CODE            patient, current calibration, history, recent sessions
    ghostly patients calibrate CODE [--mvc-left UV] [--mvc-right UV] [--duration-left S]
                               [--duration-right S] [--target N] [--bfr-target AOP]
    ghostly patients calibrate CODE --from-session SESSION_ID [--top-n N] [--any-session-type]
    ghostly patients deactivate CODE
    ghostly ingest PATH... [--patient CODE] [--type TYPE]   per file: session, status, score, warnings
    ghostly sessions list [--patient CODE] [--limit N]
    ghostly sessions show SESSION_ID      scores, per-muscle statistics (uV), signal flags, warnings
    ghostly outcome SESSION_ID [--rpe N] [--game-points N] [--game-points-max N] [--bfr-aop X]
    ghostly export ...         research/clinical export through the export service (exit 1 on errors)

Analysis (no database)
    ghostly analyze FILE.c3d   EMG analysis of one file

Start-up: only the module of the command being run is imported (app/cli.py, COMMANDS), so
`ghostly --help` and the client commands never load the EMG stack (libs.emg, numpy, scipy).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time

from libs import config as config_mod
from libs.auth import ROLES

SERVICES = tuple(config_mod.SERVICE_PORTS)

# Commands defined in other modules: name -> (module whose register(subparsers) adds it, the
# one-line help of `ghostly --help`, which must equal the module's). Only the module of the
# command being run is imported; the others appear in the parser as placeholders.
COMMANDS: dict[str, tuple[str, str]] = {
    "therapists": ("app.client.patients", "register a therapist (admin)"),
    "patients": ("app.client.patients", "patient registry: add, list, show, calibrate, deactivate"),
    "ingest": ("app.client.ingest", "upload C3D files or folders to the ingest service"),
    "sessions": ("app.client.sessions", "list sessions / show one session's scores, muscle statistics and flags"),
    "outcome": ("app.client.sessions", "record a session's RPE, game points or BFR pressure and re-score it"),
    "export": ("app.client.export", "download a research / clinical export (audited)"),
    "analyze": ("app.analyze", "analyse one C3D file (statistics + performance score)"),
    "migrate-legacy": ("app.legacy", "migrate legacy c3d_metadata/analysis_results into the statistics-first tables"),
}


def _spec(name: str):
    return importlib.import_module(f"services.{name}.server").SPEC


async def _all_health(cfg) -> list[str]:
    from app.healthcheck import status

    return list(await asyncio.gather(*(status(cfg.target(n), timeout=1.0, tls_settings=cfg.tls) for n in SERVICES)))


def cmd_status(args) -> int:
    cfg = config_mod.load()
    states = asyncio.run(_all_health(cfg))
    for name, state in zip(SERVICES, states):
        print(f"{name:<12} {cfg.target(name):<22} {state}")
    return 0 if all(s == "SERVING" for s in states) else 1


def cmd_migrate(args) -> int:
    from libs.db.embedded import ensure_database
    from libs.db.migrate import MigrationError, baselined_versions, migrate, status

    cfg, pg = ensure_database(config_mod.load())
    assert cfg.database_url is not None  # ensure_database names one
    try:
        if args.status:
            baselined = asyncio.run(baselined_versions(cfg.database_url))
            for m, applied in asyncio.run(status(cfg.database_url)):
                flag = (
                    ("baselined (existing legacy objects adopted)" if m.version in baselined else "applied")
                    if applied
                    else ("pending (manual: --to)" if m.manual else "pending")
                )
                print(f"{m.path.name:<55} {flag}")
            return 0
        if args.set_role_passwords:
            from libs.db.roles import RolePasswordError, check

            missing = [var for role, var in config_mod.ROLE_PASSWORDS.items() if role not in cfg.role_passwords]
            if missing:
                print(f"ghostly migrate: --set-role-passwords needs {', '.join(missing)}", file=sys.stderr)
                return 2
            try:
                check(cfg.role_passwords)
            except RolePasswordError as exc:
                print(f"ghostly migrate: {exc}", file=sys.stderr)
                return 2

        def said(adoption):
            if adoption.baseline:
                print(
                    f"baselined {len(adoption.baseline)} migration(s): existing legacy objects adopted "
                    "(compared with the files, not run)"
                    + "".join(f"\n  {m.path.name}" for m in adoption.baseline)
                    + "".join(f"\n  note: {n}" for n in adoption.notes)
                )

        done = asyncio.run(migrate(cfg.database_url, to=args.to, on_baseline=said))
        print(f"applied {len(done)} migration(s)" + "".join(f"\n  {m.path.name}" for m in done))
        if args.set_role_passwords:
            from libs.db.roles import set_passwords

            roles = asyncio.run(set_passwords(cfg.database_url, cfg.role_passwords))
            print(f"set the passwords of {', '.join(roles)}")
        return 0
    except MigrationError as exc:
        print(f"ghostly migrate: {exc}", file=sys.stderr)
        return 2
    finally:
        if pg:
            pg.stop()


def cmd_serve(args) -> int:
    """One service. Without DATABASE_URL it joins the embedded cluster (starting it if needed);
    stopping leaves that cluster to the other processes using it (libs/db/embedded.py)."""
    from app.service_main import main

    main(_spec(args.name))
    return 0


def _up_port_problems(cfg, pg) -> list[str]:
    """Why `ghostly up` could not listen on each port it needs (gRPC and metrics ports, and the
    embedded cluster's unless that cluster already runs and is reused), one line per port."""
    from libs.db.embedded import bind_problem

    wanted = []
    for name in SERVICES:
        wanted.append((cfg.port(name), cfg.host, f"{name} gRPC, {config_mod.SERVICE_PORTS[name][0]}"))
        if cfg.metrics_port(name):
            wanted.append((cfg.metrics_port(name), cfg.host, f"{name} metrics, {config_mod.METRICS_PORTS[name][0]}"))
    pg_port = pg.port_needed() if pg is not None else None
    if pg_port:
        wanted.append((pg_port, "127.0.0.1", "embedded PostgreSQL, GHOSTLY_PG_PORT"))
    if not cfg.events_url:
        from libs.events import EmbeddedNats

        broker = EmbeddedNats(cfg.data_dir / "nats")
        if not broker.running():  # (one left by an earlier `ghostly up` is reused)
            wanted.append((broker.port, "127.0.0.1", "embedded nats-server, GHOSTLY_NATS_PORT"))
    problems: list[str] = []
    seen: dict[int, str] = {}
    for port, host, what in wanted:
        if port in seen:
            problems.append(f"port {port} ({what}) is also configured for {seen[port]}")
            continue
        seen[port] = what
        why = bind_problem(host, port)
        if why:
            problems.append(f"port {port} ({what}) on {host} is not available: {why}")
    return problems


def cmd_up(args) -> int:
    """Database + migrations + the four services as child processes, until Ctrl-C. Every port
    needed is checked first: any unavailable -> exit 1 naming it (and its holder), nothing started."""
    from libs import logs
    from libs.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, ensure_database, redact
    from libs.db.migrate import migrate
    from libs.events import EmbeddedNatsError, ensure_broker

    cfg = config_mod.load()
    logs.setup(cfg.log_level)
    pg = None if cfg.database_url else EmbeddedPostgres()
    problems = _up_port_problems(cfg, pg)
    if problems:
        print(
            "ghostly up: nothing started:\n"
            + "\n".join(f"  {p}" for p in problems)
            + "\n  (stop what holds the port, or set the variable to a free port)",
            file=sys.stderr,
        )
        return 1
    try:
        cfg, pg = ensure_database(cfg, pg)
    except EmbeddedPostgresError as exc:
        print(f"ghostly up: {exc}", file=sys.stderr)
        return 1
    try:
        cfg, broker = ensure_broker(cfg)  # embedded nats-server unless GHOSTLY_EVENTS_URL is set
    except EmbeddedNatsError as exc:
        print(f"ghostly up: {exc}", file=sys.stderr)
        if pg:
            pg.stop()
        return 1
    children: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def request_stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        asyncio.run(migrate(cfg.database_url))
        env = dict(os.environ, DATABASE_URL=cfg.database_url)
        # Local use: calls without a token act as admin unless GHOSTLY_AUTH_MODE says otherwise.
        env.setdefault("GHOSTLY_AUTH_MODE", "dev")
        if cfg.statistics_database_url:
            env["STATISTICS_DATABASE_URL"] = cfg.statistics_database_url
        env["GHOSTLY_EVENTS_URL"] = cfg.events_url  # ingest consumes the bucket events there
        for name in SERVICES:
            children.append((name, subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env)))
        deadline = time.monotonic() + 30
        while not stopping:
            states = asyncio.run(_all_health(cfg))
            if all(s == "SERVING" for s in states) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"database  {redact(cfg.database_url)}" + (f"  (embedded, password in {pg.password_file})" if pg else ""))
        print(
            f"events    {cfg.events_url}  subject {cfg.events_subject}"
            + (f"  (embedded nats-server, store {broker.store_dir})" if broker else "")
        )
        print(
            f"auth      {env['GHOSTLY_AUTH_MODE']}"
            + ("  (no token needed: local admin)" if env["GHOSTLY_AUTH_MODE"] == "dev" else "")
        )
        for name, state in zip(SERVICES, states):
            print(f"{name:<12} grpc://{cfg.target(name):<22} {state}")
        print("Ctrl-C to stop.", flush=True)
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"ghostly up: service {name} exited with code {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        for _, proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in children:
            try:
                proc.wait(timeout=cfg.shutdown_grace_s + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker:
            broker.stop()
        if pg:
            pg.stop()


def cmd_token(args) -> int:
    """Mint a token with the configured HS256 secret (local tooling; production tokens come
    from the identity provider)."""
    from libs.auth import issue_token

    cfg = config_mod.load()
    if not cfg.auth.secret:
        print("ghostly token: set GHOSTLY_JWT_SECRET (HS256) first", file=sys.stderr)
        return 2
    print(
        issue_token(
            secret=cfg.auth.secret,
            subject=args.subject,
            role=args.role,
            issuer=cfg.auth.issuer,
            audience=cfg.auth.audience,
            ttl_s=args.ttl,
        )
    )
    return 0


def _command_word(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the top level has no options but -h)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `ghostly` parser. With `argv`, only the module of the command it names is imported
    (the other commands are placeholders that carry their help line); without, every module."""
    parser = argparse.ArgumentParser(
        prog="ghostly", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run database, migrations and all services").set_defaults(func=cmd_up)
    p = sub.add_parser("serve", help="run one service")
    p.add_argument("name", choices=SERVICES)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--to", type=int, help="apply up to this version (includes manual ones)")
    p.add_argument("--status", action="store_true", help="list migrations and whether applied")
    p.add_argument(
        "--set-role-passwords",
        action="store_true",
        help="then give the per-service roles the passwords in GHOSTLY_<SERVICE>_DB_PASSWORD",
    )
    p.set_defaults(func=cmd_migrate)
    sub.add_parser("status", help="health of each service").set_defaults(func=cmd_status)
    p = sub.add_parser("token", help="mint a bearer token (HS256, GHOSTLY_JWT_SECRET) for local use")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--subject", required=True, help="auth user id (therapists.user_id / researcher_profiles.id)")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds of validity (default 3600)")
    p.set_defaults(func=cmd_token)

    wanted = _command_word(argv) if argv is not None else None
    loaded: set[str] = set()
    for name, (module, help_line) in COMMANDS.items():
        if argv is None or COMMANDS.get(wanted or "", ("", ""))[0] == module:
            if module not in loaded:
                loaded.add(module)
                importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args) or 0
    except config_mod.ConfigError as exc:  # a bad setting: its message, no traceback
        print(f"ghostly: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
