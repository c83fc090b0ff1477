"""Keyset page tokens shared by the list RPCs (ListSessions, ListExportHistory).

A token is urlsafe base64 (no padding) of `{"v": 1, <cursor fields>, "f": <filters hash>}`: the
filters of the first page travel with it, so a token replayed with other filters is refused.
Each service chooses its cursor fields and validates them (`parse`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from libs.errors import InvalidArgument

T = TypeVar("T")

MALFORMED = "page_token is malformed (use next_page_token as returned)"
OTHER_FILTERS = (
    "page_token was issued for different filters; repeat the filters of the first page or start without a token"
)


def filter_hash(parts: list) -> str:
    """16 hex digits identifying a request's filters."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":"), default=str).encode()).hexdigest()[:16]


def encode(cursor: dict[str, Any], filters: str) -> str:
    raw = json.dumps({"v": 1, **cursor, "f": filters}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, filters: str, parse: Callable[[dict], T]) -> T:
    """The cursor `parse(fields)` makes of the token; INVALID_ARGUMENT when the token is not one
    of ours (`parse` raises ValueError/KeyError/TypeError/OverflowError for bad fields) or was
    issued for other filters."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("version")
        cursor, f = parse(data), data["f"]
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(MALFORMED) from None
    if f != filters:
        raise InvalidArgument(OTHER_FILTERS)
    return cursor


def page_size(requested: int, default: int, maximum: int) -> int:
    """The page size of a list request: `requested`, `default` for 0; INVALID_ARGUMENT above
    `maximum`."""
    size = requested or default
    if size > maximum:
        raise InvalidArgument(f"page_size must be 1-{maximum} (0 = {default}), got {requested}")
    return size


class Params(list[Any]):
    """The parameters of a dynamically built statement: `params(value)` appends `value` and
    returns its placeholder ($n), so conditions and their values are written together:
    `conds.append(f"patient_id = {params(code)}")`."""

    def __call__(self, value: Any) -> str:
        self.append(value)
        return f"${len(self)}"


def where(conds: list[str]) -> str:
    """`WHERE c1 AND c2 ...` of a dynamically built statement ("" without conditions)."""
    return ("WHERE " + " AND ".join(conds)) if conds else ""
