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
  when explicitly targeted with `to=N` (`ghostly migrate --to 008`), never implicitly;
- adoption of an existing legacy database (issue 17): 001-005 rebuild the legacy schema. When
  their objects already exist (a deployment of the old system), the runner compares them with
  what 001-005 would create (the files are run in a throw-away schema inside a rolled-back
  transaction, and tables, views, sequences and functions are compared: every column with its
  type) and records those migrations as *baselined* (`schema_migrations.baselined`) instead of
  running them. Extra legacy columns, looser NOT NULLs, missing CHECKs and other constraint
  names are accepted; a missing object, a missing required column or another column type is
  an incompatible shape: the run is refused, with every difference listed, before anything is
  applied. Optional legacy columns (OPTIONAL_LEGACY_COLUMNS) may be missing: the data migration
  reads them as NULL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

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
    files = (
        [
            p
            for p in directory.iterdir()  # as glob("*.sql"): hidden files are not looked at
            if p.name.endswith(".sql") and not p.name.startswith(".") and p.is_file()
        ]
        if directory.is_dir()
        else []
    )
    if not files:
        state = "it has no .sql file" if directory.is_dir() else "it does not exist"
        raise MigrationError(
            f"no migration files (NNN_name.sql) found in {directory} ({state}); refusing to "
            "report the database as migrated: this installation is incomplete (the package "
            "ships them as libs/db/migrations/*.sql; rebuild and reinstall the wheel)"
        )
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
            version=version,
            name=m.group(2),
            path=path,
            sql=sql,
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
);
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS baselined BOOLEAN NOT NULL DEFAULT false
"""

# Migrations that rebuild the legacy schema: adopted (baselined) when their objects exist.
BASELINE_VERSIONS = (1, 2, 3, 4, 5)
# Legacy columns the data migration can do without (read as NULL when absent): every column of
# c3d_metadata / analysis_results except the keys and what the migration cannot work without.
REQUIRED_LEGACY_COLUMNS = {
    "c3d_metadata": {"id", "file_path", "file_hash", "file_size_bytes"},
    "analysis_results": {"id", "c3d_metadata_id", "file_hash", "processing_version", "analytics_data"},
}
_PROBE_SCHEMA = "ghostly_baseline_probe"
_OBJECTS = """
SELECT 'relation' AS kind, c.relname AS name, c.relkind::text AS sub
FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'v', 'S')
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', ''
FROM pg_proc p WHERE p.pronamespace = $1::regnamespace
"""
_COLUMNS = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull
FROM pg_attribute a
WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass
class Adoption:
    """What comparing the existing legacy objects with 001-005 found."""

    baseline: list[Migration]
    differences: list[str]
    notes: list[str]


async def _expected_objects(conn: asyncpg.Connection, migrations: list[Migration]) -> dict[int, dict[Any, Any]]:
    """{version: {(kind, name): columns or None}} of what each baseline file creates, found by
    running it in a throw-away schema (the transaction is rolled back)."""
    out: dict[int, dict[Any, Any]] = {}
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"CREATE SCHEMA {_PROBE_SCHEMA}; SET LOCAL search_path TO {_PROBE_SCHEMA}")
        seen: set[tuple[Any, Any]] = set()
        for m in migrations:
            await conn.execute(m.sql)
            objs = {}
            for r in await conn.fetch(_OBJECTS, _PROBE_SCHEMA):
                key = (r["kind"], r["name"])
                if key in seen:
                    continue
                seen.add(key)
                cols = None
                if r["kind"] == "relation" and r["sub"] in ("r", "v"):
                    cols = [dict(c) for c in await conn.fetch(_COLUMNS, _PROBE_SCHEMA, r["name"])]
                objs[key] = {"sub": r["sub"], "columns": cols}
            out[m.version] = objs
    finally:
        await tx.rollback()
    return out


async def check_adoption(
    conn: asyncpg.Connection, migrations: list[Migration], applied: dict[int, tuple[str, str]]
) -> Adoption:
    """Compare existing objects with what the pending baseline migrations (001-005) create."""
    pending = [m for m in migrations if m.version in BASELINE_VERSIONS and m.version not in applied]
    result = Adoption([], [], [])
    if not pending:
        return result
    schema = await conn.fetchval("SELECT current_schema()")
    # quick test first: none of the legacy tables exists -> a fresh database, nothing to adopt
    if not await conn.fetchval(
        "SELECT count(*) FROM pg_class WHERE relnamespace = $1::regnamespace AND relname = ANY($2)",
        schema,
        [
            "therapists",
            "researcher_profiles",
            "patients",
            "c3d_metadata",
            "analysis_results",
            "analysis_summary",
            "patients_patient_code_seq",
        ],
    ) and not await conn.fetchval(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = $1::regnamespace AND proname = ANY($2)",
        schema,
        ["update_updated_at_column", "generate_patient_code"],
    ):
        return result
    expected = await _expected_objects(conn, pending)
    actual = {(r["kind"], r["name"]): r["sub"] for r in await conn.fetch(_OBJECTS, schema)}
    for m in pending:
        objs = expected[m.version]
        present = [k for k in objs if k in actual]
        if not present:
            continue  # nothing of this file exists: it is applied normally
        diffs: list[str] = []
        for (kind, name), spec in objs.items():
            if (kind, name) not in actual:
                diffs.append(f"{m.path.name}: {kind} {name} is missing")
                continue
            if actual[(kind, name)] != spec["sub"]:
                diffs.append(f"{m.path.name}: {name} is a {actual[(kind, name)]!r} relation, expected {spec['sub']!r}")
                continue
            if spec["columns"] is None:
                continue
            have = {c["name"]: c for c in await conn.fetch(_COLUMNS, schema, name)}
            required = REQUIRED_LEGACY_COLUMNS.get(name)
            for col in spec["columns"]:
                got = have.get(col["name"])
                if got is None:
                    if required is not None and col["name"] not in required:
                        result.notes.append(
                            f"{name}.{col['name']} ({col['type']}) is missing: optional, "
                            "read as NULL by the data migration"
                        )
                    else:
                        diffs.append(f"{m.path.name}: column {name}.{col['name']} ({col['type']}) is missing")
                elif got["type"] != col["type"]:
                    diffs.append(f"{m.path.name}: column {name}.{col['name']} is {got['type']}, expected {col['type']}")
                elif col["notnull"] and not got["notnull"]:
                    result.notes.append(
                        f"{name}.{col['name']} is nullable in the existing table (NOT NULL in {m.path.name})"
                    )
            extra = [c for c in have if c not in {col["name"] for col in spec["columns"]}]
            if extra:
                result.notes.append(f"{name} has extra column(s) kept as they are: {', '.join(extra)}")
        if diffs:
            result.differences += diffs
        else:
            result.baseline.append(m)
    return result


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
                "this code is older than the database"
            )
        if m.checksum != checksum:
            raise MigrationError(
                f"migration {m.path.name} was edited after it was applied "
                f"(checksum {checksum[:12]}… in the database, {m.checksum[:12]}… on disk); "
                "applied migrations are immutable: add a new migration instead"
            )


async def migrate(
    dsn: str,
    *,
    to: int | None = None,
    directory: Path | Traversable | None = None,
    on_baseline: Callable[[Adoption], object] | None = None,
) -> list[Migration]:
    """Apply pending migrations up to `to` (default: all non-manual). Returns those applied.
    Existing legacy objects matching 001-005 are baselined first (see module doc);
    `on_baseline(Adoption)` is called with what was found (the CLI prints it)."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await conn.execute(_BOOKKEEPING)
            applied = await applied_versions(conn)
            _check_applied(migrations, applied)
            adoption = await check_adoption(conn, migrations, applied)
            if adoption.differences:
                raise MigrationError(
                    "existing legacy objects do not match migrations 001-005; nothing was applied. "
                    "Differences:\n  " + "\n  ".join(adoption.differences)
                )
            if adoption.baseline:
                async with conn.transaction():
                    for m in adoption.baseline:
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum, execution_ms, baselined) "
                            "VALUES ($1, $2, $3, 0, true)",
                            m.version,
                            m.name,
                            m.checksum,
                        )
                        applied[m.version] = (m.name, m.checksum)
                for note in adoption.notes:
                    log.info("legacy adoption: %s", note)
                log.info(
                    "baselined (existing legacy objects adopted): %s", ", ".join(m.path.name for m in adoption.baseline)
                )
            if on_baseline is not None:
                on_baseline(adoption)
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
                            "VALUES ($1, $2, $3, $4)",
                            m.version,
                            m.name,
                            m.checksum,
                            elapsed,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {m.path.name} failed and was rolled back: {exc.__class__.__name__}: {exc}"
                    ) from exc
                log.info("applied migration %s in %d ms", m.path.name, elapsed)
                done.append(m)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def status(dsn: str, directory: Path | Traversable | None = None) -> list[tuple[Migration, bool]]:
    """Every known migration with whether it is applied (checks applied files are unedited)."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        applied = await applied_versions(conn)
    finally:
        await conn.close()
    _check_applied(migrations, applied)
    return [(m, m.version in applied) for m in migrations]


async def baselined_versions(dsn: str) -> set[int]:
    """Versions recorded as baselined (adopted existing legacy objects, not run)."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'schema_migrations' "
            "AND column_name = 'baselined' AND table_schema = current_schema()"
        ):
            return set()
        return {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations WHERE baselined")}
    finally:
        await conn.close()
