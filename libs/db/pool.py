"""asyncpg connection pools with the codecs every service expects."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from libs import tracing

log = logging.getLogger("ghostly.db")


async def init_connection(conn: asyncpg.Connection) -> None:
    # JSON/JSONB columns come back as Python objects and accept them on the way in.
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "ghostly", **options: Any
) -> asyncpg.Pool:
    """Create a pool (extra asyncpg pool `options`, e.g. reset=..., pass through). If the
    database is unreachable now, fall back to a lazy pool (min 0) so the service can still
    start and report NOT_SERVING until the database comes back. With tracing on (libs/tracing.py)
    its connections record a span per statement."""
    from libs.db.access import reset_connection

    # The reset also forgets the caller identity set on the connection (libs/db/access.py).
    options.setdefault("reset", reset_connection)
    if tracing.enabled():
        # A span per statement (libs/tracing.py); tracing off: asyncpg's own class, no cost.
        options["connection_class"] = tracing.traced_connection_class(
            options.get("connection_class", asyncpg.Connection)
        )
    kwargs = dict(
        max_size=max_size,
        init=init_connection,
        command_timeout=60,
        server_settings={"application_name": application_name},
        **options,
    )
    try:
        return await asyncpg.create_pool(dsn, min_size=min_size, **kwargs)
    except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
        log.warning("database unreachable at start-up (%s); starting with a lazy pool", exc)
        return await asyncpg.create_pool(dsn, min_size=0, **kwargs)
