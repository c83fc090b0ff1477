"""Passwords of the per-service database roles (migration 010 creates them with LOGIN and no
password). `ghostly migrate --set-role-passwords` calls set_passwords with the
GHOSTLY_<SERVICE>_DB_PASSWORD settings, so a deployment (compose's migrate job, a Kubernetes
Job) gives every service its own credentials from secrets, never from the image."""

from __future__ import annotations

import asyncpg

MIN_LENGTH = 12


class RolePasswordError(ValueError):
    pass


def check(passwords: dict[str, str]) -> None:
    """Refuse weak or unusable passwords before touching the database."""
    for role, pw in passwords.items():
        if len(pw) < MIN_LENGTH:
            raise RolePasswordError(f"the password for {role} must be at least {MIN_LENGTH} characters")
        if "\x00" in pw:
            raise RolePasswordError(f"the password for {role} must not contain NUL")


async def set_passwords(dsn: str, passwords: dict[str, str]) -> list[str]:
    """ALTER ROLE ... PASSWORD for each role (SCRAM-hashed by the server); returns the roles set."""
    check(passwords)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for role, pw in sorted(passwords.items()):
                exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role)
                if not exists:
                    raise RolePasswordError(f"role {role} does not exist: run the migrations first")
                await conn.execute("SET LOCAL password_encryption = 'scram-sha-256'")
                stmt = await conn.fetchval(
                    "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)", role, pw
                )
                await conn.execute(stmt)
    finally:
        await conn.close()
    return sorted(passwords)
