"""Each service's database role is granted exactly what that service's SQL uses.

The SQL of a service is read from its own modules (services/<name>/) and the shared libraries
it calls (libs/db/access.py, libs/db/signal_cache.py): every table it reads (FROM/JOIN),
inserts into, updates (UPDATE ... SET, INSERT ... ON CONFLICT DO UPDATE, row locks FOR
SHARE/UPDATE) or deletes from. The roles' privileges (migrations 010-018) must be that set:
a missing grant fails at run time, an unused one is a wider door than needed. The table of
migrations/README.md ("Tables, owners, readers") says the same in words.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import ROOT

SERVICES = {
    "ghostly_ingest": ("services/ingest", ["libs/db/signal_cache.py"]),
    "ghostly_statistics": ("services/statistics", ["libs/db/access.py"]),
    "ghostly_jit_signal": ("services/jit_signal", ["libs/db/access.py", "libs/db/signal_cache.py"]),
    "ghostly_export": ("services/export", ["libs/db/access.py"]),
}
# Privileges only a definer function or the database itself exercises for the role, with why.
IMPLICIT: dict[str, dict[str, set[str]]] = {}


def _statements(text: str) -> list[str]:
    return re.split(r";|\"\"\"|'''", text)


def sql_use(paths: list[Path], tables: set[str]) -> dict[str, set[str]]:
    use: dict[str, set[str]] = {}

    def add(table: str, *privs: str) -> None:
        if table in tables:
            use.setdefault(table, set()).update(privs)

    for path in paths:
        for stmt in _statements(path.read_text()):
            for m in re.finditer(r"\bINSERT\s+INTO\s+(\w+)", stmt, re.I):
                add(m.group(1), "INSERT")
                if re.search(r"ON\s+CONFLICT[^;]*DO\s+UPDATE", stmt[m.end() :], re.I | re.S):
                    add(m.group(1), "UPDATE")
            for m in re.finditer(r"\bUPDATE\s+(\w+)(?:\s+(?:AS\s+)?\w+)?\s+SET\b", stmt, re.I):
                add(m.group(1), "UPDATE", "SELECT")
            for m in re.finditer(r"\bDELETE\s+FROM\s+(\w+)", stmt, re.I):
                add(m.group(1), "DELETE", "SELECT")
            for m in re.finditer(r"(?<!DELETE )\b(?:FROM|JOIN)\s+(\w+)\b(?!\s*\()", stmt, re.I):
                add(m.group(1), "SELECT")
            lock = re.search(r"\bFOR\s+(?:SHARE|UPDATE)(?:\s+OF\s+(\w+))?", stmt, re.I)
            if lock:  # the locked table: the one named by OF (its alias), else the first FROM
                alias = lock.group(1)
                locked = (
                    re.search(rf"\bFROM\s+(\w+)\s+(?:AS\s+)?{alias}\b", stmt, re.I)
                    if alias
                    else re.search(r"\bFROM\s+(\w+)", stmt, re.I)
                )
                if locked:
                    add(locked.group(1), "UPDATE(row lock)")
    return use


async def _granted(conn, role: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in await conn.fetch(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants WHERE grantee = $1", role
    ):
        out.setdefault(r["table_name"], set()).add(r["privilege_type"])
    for r in await conn.fetch(
        "SELECT table_name, privilege_type FROM information_schema.column_privileges c WHERE grantee = $1 "
        "AND NOT EXISTS (SELECT 1 FROM information_schema.role_table_grants t WHERE t.grantee = c.grantee "
        "AND t.table_name = c.table_name AND t.privilege_type = c.privilege_type)",
        role,
    ):
        out.setdefault(r["table_name"], set()).add(f"{r['privilege_type']}(row lock)")
    return out


@pytest.mark.parametrize("role", sorted(SERVICES))
async def test_grants_are_exactly_what_the_service_sql_uses(database_url, role):
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        granted = await _granted(conn, role)
    finally:
        await conn.close()
    folder, libs = SERVICES[role]
    paths = sorted((ROOT / folder).glob("*.py")) + [ROOT / p for p in libs]
    used = sql_use(paths, tables)
    for table, privs in IMPLICIT.get(role, {}).items():
        used.setdefault(table, set()).update(privs)
    # A row lock needs UPDATE on one column (018); a table-level UPDATE covers it.
    for _table, privs in list(used.items()):
        if "UPDATE(row lock)" in privs and "UPDATE" in privs:
            privs.discard("UPDATE(row lock)")
    missing = {t: sorted(p - granted.get(t, set())) for t, p in used.items() if p - granted.get(t, set())}
    unused = {t: sorted(p - used.get(t, set())) for t, p in granted.items() if p - used.get(t, set())}
    assert not missing, f"{role}: the service's SQL needs {missing} but the role lacks it"
    assert not unused, f"{role}: granted but not used by the service's SQL: {unused}"
