"""Migration runner for the plain SQL files in migrations/.

Where the files are: the package resource `libs.db/migrations` (importlib.resources), so an
installed wheel finds the copy it ships. In the checkout `libs/db/migrations` is a symlink to the
top-level `migrations/` (the one copy of each file, where the docs and tests look); the wheel
holds them as package data (pyproject.toml) and tests/test_packaging.py checks the installed
package. No file found at all is an error, never "0 applied": an install without its
migrations must not look like an up-to-date database.

Rules (see migrations/README.md):
- files are `NNN_description.sql`, applied in numeric order, each in ONE transaction together
  with its row in `schema_migrations` (so a failed file leaves nothing behind);
- the SHA-256 of every applied file is stored; an applied file that was edited afterwards is
  refused (ship a new migration instead);
- a session-level advisory lock serialises runners, so services starting together do not race:
  the second waits, then finds nothing left to do;
- a file whose header contains `-- ghostly:manual` (e.g. 008, the decommission) is applied only
  when explicitly targeted with `to=N` (`ghostly migrate --to 008`), never implicitly.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

log = logging.getLogger("ghostly.migrate")

ADVISORY_LOCK_KEY = 0x47484F53544C59  # "GHOSTLY" in ASCII
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_MANUAL = "-- ghostly:manual"


class MigrationError(RuntimeError):
    """A migration cannot be applied safely (no files, edited file, unknown version, SQL error)."""


def default_directory() -> Traversable:
    """The migrations shipped with this code: package resource `libs.db/migrations`."""
    return resources.files("libs.db").joinpath("migrations")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path | Traversable  # a Path unless the package is imported from an archive
    sql: str
    checksum: str
    manual: bool


def discover(directory: Path | Traversable | None = None) -> list[Migration]:
    """Every migration file of `directory` (default: the shipped ones), in version order.
    Raises MigrationError when there is none: that is a broken installation or a wrong
    directory, never a database with nothing left to do."""
    directory = default_directory() if directory is None else directory
    files = ([p for p in directory.iterdir()  # as glob("*.sql"): hidden files are not looked at
              if p.name.endswith(".sql") and not p.name.startswith(".") and p.is_file()]
             if directory.is_dir() else [])
    if not files:
        state = "it has no .sql file" if directory.is_dir() else "it does not exist"
        raise MigrationError(
            f"no migration files (NNN_name.sql) found in {directory} ({state}); refusing to "
            "report the database as migrated: this installation is incomplete (the package "
            "ships them as libs/db/migrations/*.sql; rebuild and reinstall the wheel)")
    found: dict[int, Migration] = {}
    for path in sorted(files, key=lambda p: p.name):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name {path.name!r} does not match NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migration files share version {version:03d}")
        sql = path.read_text(encoding="utf-8")
        header = "\n".join(sql.splitlines()[:10])
        found[version] = Migration(
            version=version, name=m.group(2), path=path, sql=sql,
            checksum=hashlib.sha256(sql.encode("utf-8")).hexdigest(),
            manual=_MANUAL in header,
        )
    return [found[v] for v in sorted(found)]


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version      INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    checksum     TEXT NOT NULL,
    applied_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    execution_ms INTEGER NOT NULL
)
"""


async def applied_versions(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


def _check_applied(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            raise MigrationError(
                f"database has migration {version:03d}_{name} applied but no such file exists; "
                "this code is older than the database")
        if m.checksum != checksum:
            raise MigrationError(
                f"migration {m.path.name} was edited after it was applied "
                f"(checksum {checksum[:12]}… in the database, {m.checksum[:12]}… on disk); "
                "applied migrations are immutable: add a new migration instead")


async def migrate(dsn: str, *, to: int | None = None,
                  directory: Path | Traversable | None = None) -> list[Migration]:
    """Apply pending migrations up to `to` (default: all non-manual). Returns those applied."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await conn.execute(_BOOKKEEPING)
            applied = await applied_versions(conn)
            _check_applied(migrations, applied)
            done: list[Migration] = []
            for m in migrations:
                if m.version in applied:
                    continue
                if to is not None and m.version > to:
                    break
                if m.manual and (to is None or m.version > to):
                    log.info("skipping manual migration %s (apply with --to %03d)", m.path.name, m.version)
                    continue
                started = time.perf_counter()
                try:
                    async with conn.transaction():
                        await conn.execute(m.sql)
                        elapsed = int((time.perf_counter() - started) * 1000)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum, execution_ms) "
                            "VALUES ($1, $2, $3, $4)", m.version, m.name, m.checksum, elapsed)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {m.path.name} failed and was rolled back: "
                                         f"{exc.__class__.__name__}: {exc}") from exc
                log.info("applied migration %s in %d ms", m.path.name, elapsed)
                done.append(m)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def status(dsn: str,
                 directory: Path | Traversable | None = None) -> list[tuple[Migration, bool]]:
    """Every known migration with whether it is applied (checks applied files are unedited)."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        applied = await applied_versions(conn)
    finally:
        await conn.close()
    _check_applied(migrations, applied)
    return [(m, m.version in applied) for m in migrations]
