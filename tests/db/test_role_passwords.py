"""`ghostly migrate --set-role-passwords`: each per-service role gets its password from the
environment (SCRAM-hashed); missing or weak passwords are refused before anything is done.
Runs on its own throwaway cluster: roles are cluster-wide and other tests' services use them."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest

from libs import config as config_mod
from libs.db.embedded import EmbeddedPostgres
from libs.db.migrate import migrate
from libs.db.roles import RolePasswordError, set_passwords
from tests.helpers import ROOT, subprocess_env

PASSWORDS = {role: f"{role}-secret-password" for role in config_mod.ROLE_PASSWORDS}


@pytest.fixture(scope="module")
def own_cluster():
    pg = EmbeddedPostgres(ephemeral=True)
    pg.start()
    yield pg
    pg.stop()


async def test_role_passwords_are_set_scram_hashed(own_cluster):
    dsn = own_cluster.admin_dsn()
    await migrate(dsn)
    assert await set_passwords(dsn, PASSWORDS) == sorted(PASSWORDS)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolpassword, rolcanlogin FROM pg_authid WHERE rolname = ANY($1)", list(PASSWORDS)
        )
    finally:
        await conn.close()
    assert {r["rolname"] for r in rows} == set(PASSWORDS)
    assert all(r["rolpassword"].startswith("SCRAM-SHA-256$") and r["rolcanlogin"] for r in rows)
    with pytest.raises(RolePasswordError, match="at least 12"):
        await set_passwords(dsn, {"ghostly_ingest": "short"})


def test_cli_refuses_missing_role_passwords(own_cluster):
    env = subprocess_env(DATABASE_URL=own_cluster.admin_dsn(), GHOSTLY_INGEST_DB_PASSWORD=PASSWORDS["ghostly_ingest"])
    for var in config_mod.ROLE_PASSWORDS.values():
        if var != "GHOSTLY_INGEST_DB_PASSWORD":
            env.pop(var, None)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate", "--set-role-passwords"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "GHOSTLY_STATISTICS_DB_PASSWORD" in result.stderr
    assert "applied" not in result.stdout
    env.update({var: PASSWORDS[role] for role, var in config_mod.ROLE_PASSWORDS.items()})
    ok = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate", "--set-role-passwords"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "set the passwords of ghostly_export" in ok.stdout, ok.stderr
