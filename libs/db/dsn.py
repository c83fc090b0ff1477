"""PostgreSQL connection strings."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


def with_user(dsn: str, user: str, password: str | None = None) -> str:
    """`dsn` (postgres:// URI) with its user replaced by `user` and its password replaced by
    `password` (removed when None)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported DSN scheme {parts.scheme!r}: use postgresql://")
    netloc = parts.netloc.rsplit("@", 1)[-1]  # host[:port][,host2...]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("user", "password")]
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{netloc}", query=urlencode(query)))


def password_of(dsn: str) -> str | None:
    from urllib.parse import unquote

    parts = urlsplit(dsn)
    return unquote(parts.password) if parts.password else None


def service_dsn(database_url: str | None, role: str, role_password: str | None) -> str | None:
    """The DSN a service connects with: DATABASE_URL as its own role (migration 010), with the
    role's password (GHOSTLY_<SERVICE>_DB_PASSWORD) or, when none is configured, the password of
    DATABASE_URL (the embedded cluster gives every role the cluster's password; elsewhere a
    missing role password fails the login at start, with PostgreSQL's message)."""
    if not database_url:
        return None
    return with_user(database_url, role, role_password or password_of(database_url))
