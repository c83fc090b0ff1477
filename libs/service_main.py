"""Process entry point shared by `python -m services.<name>` and `ghostly serve <name>`."""
from __future__ import annotations

import asyncio
import logging

from libs import config as config_mod
from libs import logs
from libs.grpc_server import ServiceSpec, serve

log = logging.getLogger("ghostly")


def main(spec: ServiceSpec) -> None:
    cfg = config_mod.load()
    logs.setup(cfg.log_level)
    pg = None
    if not cfg.database_url:
        # Local use without a server: the project's own embedded cluster, migrated.
        from libs.db.embedded import EmbeddedPostgres
        from libs.db.migrate import migrate
        pg = EmbeddedPostgres()
        cfg = cfg.with_database(pg.start())
        asyncio.run(migrate(cfg.database_url))
    try:
        asyncio.run(serve(spec, cfg))
    finally:
        if pg is not None:
            pg.stop()
