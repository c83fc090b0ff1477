"""Process entry point shared by `python -m services.<name>` and `ghostly serve <name>`."""

from __future__ import annotations

import asyncio
import logging
import sys

from libs import config as config_mod
from libs import logs, tracing
from libs.db.embedded import ensure_database
from libs.grpc_server import ServiceSpec, serve

log = logging.getLogger("ghostly")


def loop_factory(name: str):
    """The event loop the service runs on (GHOSTLY_EVENT_LOOP): uvloop by default, which
    grpc.aio and asyncpg both run on, or the standard asyncio loop."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:  # e.g. a platform without wheels: the standard loop still works
            log.warning("uvloop is not installed; running on the standard asyncio loop")
            return None
        return uvloop.new_event_loop
    raise SystemExit(f"GHOSTLY_EVENT_LOOP must be 'uvloop' or 'asyncio', got {name!r}")


def main(spec: ServiceSpec) -> None:
    try:
        cfg = config_mod.load()
    except config_mod.ConfigError as exc:  # a bad setting: its message, exit 2, no traceback
        print(f"{spec.name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.setup(cfg.log_level)
    try:
        # Once per process, before any pool, store or channel exists (they are traced from the
        # start): the OTEL_* variables, off unless OTEL_TRACES_EXPORTER names an exporter.
        tracing.setup(spec.name)
    except tracing.TracingConfigError as exc:
        print(f"{spec.name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    factory = loop_factory(cfg.event_loop)
    # Local use without a server: the project's own embedded cluster, migrated.
    cfg, pg = ensure_database(cfg)
    assert cfg.database_url is not None  # ensure_database names one
    if pg is not None:
        from libs.db.migrate import migrate

        asyncio.run(migrate(cfg.database_url))
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(spec, cfg))
    finally:
        if pg is not None:
            pg.stop()
