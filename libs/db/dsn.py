"""PostgreSQL connection strings."""
from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


def with_user(dsn: str, user: str) -> str:
    """`dsn` (postgres:// URI) with its user replaced by `user` and any password removed."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported DSN scheme {parts.scheme!r}: use postgresql://")
    netloc = parts.netloc.rsplit("@", 1)[-1]           # host[:port][,host2...]
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("user", "password")]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{netloc}", query=urlencode(query)))
