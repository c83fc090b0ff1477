"""Migration runner: fresh database, idempotent re-run, edited file refused, concurrency,
manual migrations only on purpose, a failing file rolled back."""

from __future__ import annotations

import asyncio
import shutil

import asyncpg
import pytest

from libs.config import MIGRATIONS_DIR
from libs.db.migrate import MigrationError, discover, migrate, status


@pytest.fixture
def migrations_copy(tmp_path):
    d = tmp_path / "migrations"
    d.mkdir()
    for f in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(f, d / f.name)
    return d


async def _versions(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


async def test_fresh_database_gets_every_migration(empty_database_url):
    done = await migrate(empty_database_url)
    expected = [m.version for m in discover() if not m.manual]
    assert [m.version for m in done] == expected
    assert await _versions(empty_database_url) == expected
    assert 6 in expected


async def test_rerun_is_a_noop(empty_database_url):
    await migrate(empty_database_url)
    assert await migrate(empty_database_url) == []


async def test_edited_applied_migration_is_refused(empty_database_url, migrations_copy):
    await migrate(empty_database_url, directory=migrations_copy)
    target = sorted(migrations_copy.glob("003_*.sql"))[0]
    target.write_text(target.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(empty_database_url, directory=migrations_copy)
    with pytest.raises(MigrationError, match="edited"):
        await status(empty_database_url, directory=migrations_copy)


async def test_concurrent_runners_apply_each_migration_once(empty_database_url):
    results = await asyncio.gather(*(migrate(empty_database_url) for _ in range(4)))
    applied = sorted(m.version for r in results for m in r)
    expected = [m.version for m in discover() if not m.manual]
    assert applied == expected, "each migration applied exactly once across runners"
    assert await _versions(empty_database_url) == expected


async def test_manual_migration_only_when_targeted(empty_database_url, migrations_copy):
    (migrations_copy / "900_manual_step.sql").write_text(
        "-- ghostly:manual\n-- applied only on purpose\nCREATE TABLE manual_marker (id int);\n"
    )
    (migrations_copy / "901_after.sql").write_text("-- later regular migration\nCREATE TABLE after_marker (id int);\n")
    await migrate(empty_database_url, directory=migrations_copy)
    versions = await _versions(empty_database_url)
    assert 900 not in versions and 901 in versions
    await migrate(empty_database_url, directory=migrations_copy, to=900)
    assert 900 in await _versions(empty_database_url)


async def test_failing_migration_leaves_nothing(empty_database_url, migrations_copy):
    (migrations_copy / "950_broken.sql").write_text(
        "-- broken on purpose\nCREATE TABLE half_done (id int);\nSELECT no_such_function();\n"
    )
    with pytest.raises(MigrationError, match=r"950_broken.sql failed and was rolled back"):
        await migrate(empty_database_url, directory=migrations_copy)
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert 950 not in await _versions(empty_database_url)
    finally:
        await conn.close()


def test_bad_file_name_is_refused(migrations_copy):
    (migrations_copy / "7_no_padding.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="does not match"):
        discover(migrations_copy)
