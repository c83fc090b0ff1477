"""The `ghostly` command: run the stack, migrate, check health, analyse files.

    ghostly up                 database (embedded unless DATABASE_URL) + migrations + 4 services
    ghostly serve NAME         one service, as in production
    ghostly migrate [--to N]   apply migrations (manual ones, e.g. 008, only with --to)
    ghostly status             health of each service
    ghostly token --role R --subject ID   mint a local bearer token (clients send $GHOSTLY_TOKEN)
    ghostly analyze FILE.c3d   EMG analysis of one file (no database)
    ghostly ingest PATH...     upload C3D files/folders through the ingest service
    ghostly export ...         research/clinical export through the export service
    ghostly migrate-legacy     move legacy c3d_metadata/analysis_results into the new schema
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
from libs import logs
from libs.db.embedded import ensure_database

SERVICES = tuple(config_mod.SERVICE_PORTS)


def _spec(name: str):
    return importlib.import_module(f"services.{name}.server").SPEC


async def _all_health(cfg) -> list[str]:
    from libs.healthcheck import status
    return list(await asyncio.gather(*(status(cfg.target(n), timeout=1.0) for n in SERVICES)))


def cmd_status(args) -> int:
    cfg = config_mod.load()
    states = asyncio.run(_all_health(cfg))
    for name, state in zip(SERVICES, states):
        print(f"{name:<12} {cfg.target(name):<22} {state}")
    return 0 if all(s == "SERVING" for s in states) else 1


def cmd_migrate(args) -> int:
    from libs.db.migrate import MigrationError, migrate, status
    cfg, pg = ensure_database(config_mod.load())
    try:
        if args.status:
            for m, applied in asyncio.run(status(cfg.database_url)):
                flag = "applied" if applied else ("pending (manual: --to)" if m.manual else "pending")
                print(f"{m.path.name:<55} {flag}")
            return 0
        done = asyncio.run(migrate(cfg.database_url, to=args.to))
        print(f"applied {len(done)} migration(s)" + "".join(f"\n  {m.path.name}" for m in done))
        return 0
    except MigrationError as exc:
        print(f"ghostly migrate: {exc}", file=sys.stderr)
        return 2
    finally:
        if pg:
            pg.stop()


def cmd_serve(args) -> int:
    from libs.service_main import main
    main(_spec(args.name))
    return 0


def cmd_up(args) -> int:
    """Database + migrations + the four services as child processes, until Ctrl-C."""
    from libs.db.migrate import migrate
    cfg = config_mod.load()
    logs.setup(cfg.log_level)
    cfg, pg = ensure_database(cfg)
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
        for name in SERVICES:
            children.append((name, subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env)))
        deadline = time.monotonic() + 30
        while not stopping:
            states = asyncio.run(_all_health(cfg))
            if all(s == "SERVING" for s in states) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"database  {cfg.database_url}" + ("  (embedded)" if pg else ""))
        print(f"auth      {env['GHOSTLY_AUTH_MODE']}" + ("  (no token needed: local admin)"
                                                      if env["GHOSTLY_AUTH_MODE"] == "dev" else ""))
        for name, state in zip(SERVICES, states):
            print(f"{name:<12} grpc://{cfg.target(name):<22} {state}")
        print("Ctrl-C to stop.", flush=True)
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"ghostly up: service {name} exited with code {proc.returncode}; stopping",
                          file=sys.stderr)
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
    print(issue_token(secret=cfg.auth.secret, subject=args.subject, role=args.role, issuer=cfg.auth.issuer,
                      audience=cfg.auth.audience, ttl_s=args.ttl))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghostly", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run database, migrations and all services").set_defaults(func=cmd_up)
    p = sub.add_parser("serve", help="run one service")
    p.add_argument("name", choices=SERVICES)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="apply database migrations")
    p.add_argument("--to", type=int, help="apply up to this version (includes manual ones)")
    p.add_argument("--status", action="store_true", help="list migrations and whether applied")
    p.set_defaults(func=cmd_migrate)
    sub.add_parser("status", help="health of each service").set_defaults(func=cmd_status)
    p = sub.add_parser("token", help="mint a bearer token (HS256, GHOSTLY_JWT_SECRET) for local use")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--subject", required=True, help="auth user id (therapists.user_id / researcher_profiles.id)")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds of validity (default 3600)")
    p.set_defaults(func=cmd_token)
    from libs.emg import cli as emg_cli
    from libs.legacy import cli as legacy_cli
    from services.export import cli as export_cli
    from services.ingest import cli as ingest_cli
    emg_cli.register(sub)
    ingest_cli.register(sub)
    export_cli.register(sub)
    legacy_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
