"""Database access of the statistics service: a read-only role, optionally on a read replica.

* STATISTICS_DATABASE_URL set explicitly (i.e. different from DATABASE_URL): used as is. That
  is how a read replica or a separately provisioned read-only user is configured.
* Otherwise the DATABASE_URL is reused with its user swapped to `ghostly_statistics`
  (migration 010), and its password dropped: the role has no password in the migration;
  operators give it one and supply it via ~/.pgpass / PGPASSFILE, or trust/cert auth rules,
  or set STATISTICS_DATABASE_URL with the password.
"""

from __future__ import annotations

import asyncpg

from libs.config import Config
from libs.db.dsn import with_user

ROLE = "ghostly_statistics"


def statistics_dsn(config: Config) -> str | None:
    """The DSN the statistics service connects with (see module docstring)."""
    explicit = config.statistics_database_url
    base = config.database_url
    if explicit and explicit != base:
        return explicit
    if not base:
        return explicit
    return with_user(base, ROLE)


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to reset.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL;` on every release, one extra round trip per RPC (~0.2 ms, as much as the query
    itself). This service never changes session state (no SET, LISTEN, advisory locks or
    cursors), and asyncpg still rolls back a transaction left open before calling this hook."""
