"""Authentication (signed JWT bearer tokens) and the caller's identity.

Every RPC except health and reflection carries `authorization: Bearer <JWT>`. The token is
HS256 (shared secret) or RS256 (public key) signed, and must carry `sub` (the auth user id),
`role` (therapist / researcher / admin / service), `iss`, `aud` and `exp`, all checked.
Service-to-service calls forward the caller's token, so the downstream service applies the
same identity (a therapist exporting through the export service still sees only their
patients).

Dev mode (GHOSTLY_AUTH_MODE=dev, what `ghostly up` uses for local work unless told
otherwise): calls without a token act as a local admin; a token, when sent, is still checked.
The default is `jwt`: without a verification key configured every call is refused.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

# PyJWT (with `cryptography`, ~60 ms to import) is imported where tokens are made or checked,
# not here: libs.config imports this module, and so does every `ghostly` command (start-up).
from libs.errors import FailedPrecondition, PermissionDenied, Unauthenticated

ROLES = ("therapist", "researcher", "admin", "service")
ALL_ROLES = frozenset(ROLES)
WRITERS = frozenset({"admin", "service"})

DEV_SUBJECT = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Identity:
    subject: str  # auth user id (therapists.user_id / researcher_profiles.id)
    role: str
    token: str | None = None  # forwarded to downstream services
    dev: bool = False

    @property
    def is_therapist(self) -> bool:
        return self.role == "therapist"

    def subject_uuid(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(self.subject)
        except ValueError:
            return None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata forwarding this identity to another service."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


DEV_IDENTITY = Identity(subject=DEV_SUBJECT, role="admin", dev=True)
# Fail closed: no identity unless the interceptor set one (dev mode sets DEV_IDENTITY
# explicitly for calls without a token). Code outside an RPC that needs one sets it itself
# (set_current / acting_as).
_CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("identity", default=None)


def current() -> Identity:
    """The identity of the RPC being served (set by the interceptor); PERMISSION_DENIED when
    nothing set one, never an implicit admin."""
    identity = _CURRENT.get()
    if identity is None:
        raise PermissionDenied("no authenticated caller for this operation")
    return identity


def set_current(identity: Identity) -> contextvars.Token[Identity | None]:
    return _CURRENT.set(identity)


class acting_as:
    """``with auth.acting_as(identity):`` sets the identity outside an RPC (scripts, tests)."""

    def __init__(self, identity: Identity):
        self.identity = identity

    def __enter__(self) -> Identity:
        self._token = set_current(self.identity)
        return self.identity

    def __exit__(self, *exc: object) -> None:
        reset_current(self._token)


def reset_current(token: contextvars.Token) -> None:
    try:
        _CURRENT.reset(token)
    except ValueError:
        pass  # a closed stream generator may be finalised from another context


def _read_key(value: str | None) -> str | None:
    if value and value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            return f.read()
    return value


@dataclass(frozen=True)
class AuthSettings:
    mode: str = "jwt"  # "jwt" or "dev"
    algorithm: str = "HS256"  # "HS256" or "RS256"
    secret: str | None = None  # HS256 shared secret
    public_key: str | None = None  # RS256 PEM (or @/path/to/key.pem)
    issuer: str = "ghostly"
    audience: str = "ghostly-backend"
    leeway_s: float = 30.0

    def verification_key(self) -> str | None:
        return self.secret if self.algorithm == "HS256" else _read_key(self.public_key)


# Verified tokens remembered per process (least recently used dropped first).
VERIFIED_TOKENS_KEPT = 4096


class Authenticator:
    def __init__(self, settings: AuthSettings):
        if settings.mode not in ("jwt", "dev"):
            raise ValueError(f"GHOSTLY_AUTH_MODE must be 'jwt' or 'dev', got {settings.mode!r}")
        if settings.algorithm not in ("HS256", "RS256"):
            raise ValueError(f"GHOSTLY_JWT_ALGORITHM must be HS256 or RS256, got {settings.algorithm!r}")
        self.settings = settings
        self._key = settings.verification_key()
        import jwt  # noqa: F401 (imported once when the server starts, not on its first call)

        # token -> (identity, nbf, exp) of tokens whose signature and claims were verified. The
        # gateway sends the same token on many calls, and verifying it costs ~40 us (HS256;
        # RS256 more), as much as a point read's own work. A hit is re-checked against nbf/exp
        # (with the leeway), so an expired token is refused as before.
        self._verified: OrderedDict[str, tuple[Identity, float, float]] = OrderedDict()

    def authenticate(self, metadata) -> Identity:
        token = None
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, rest = str(value).partition(" ")
                if scheme.lower() != "bearer" or not rest.strip():
                    raise Unauthenticated("authorization metadata must be 'Bearer <JWT>'")
                token = rest.strip()
        if token is None:
            if self.settings.mode == "dev":
                return DEV_IDENTITY
            raise Unauthenticated("missing bearer token: send metadata 'authorization: Bearer <JWT>'")
        cached = self._verified.get(token)
        if cached is not None:
            identity, not_before, expires = cached
            # PyJWT's own rule: valid while nbf - leeway <= now < int(exp) + leeway.
            if not_before - self.settings.leeway_s <= time.time() < expires + self.settings.leeway_s:
                self._verified.move_to_end(token)
                return identity
            del self._verified[token]  # expired (or not yet valid): verify again, which says why
        if not self._key:
            raise FailedPrecondition(
                "the server has no token verification key configured (GHOSTLY_JWT_SECRET or GHOSTLY_JWT_PUBLIC_KEY)"
            )
        import jwt

        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[s.algorithm],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"token audience is not {s.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"token issuer is not {s.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        role = claims.get("role")
        if role not in ROLES:
            raise Unauthenticated(f"token role must be one of {', '.join(ROLES)}, got {role!r}")
        identity = Identity(subject=str(claims["sub"]), role=role, token=token)
        nbf = claims.get("nbf")
        self._verified[token] = (identity, float("-inf") if nbf is None else int(nbf), int(claims["exp"]))
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return identity


def authorize(identity: Identity, allowed: frozenset[str], method: str) -> None:
    if identity.role not in allowed:
        raise PermissionDenied(
            f"role {identity.role!r} may not call {method.rsplit('/', 1)[-1]} (allowed: {', '.join(sorted(allowed))})"
        )


def client_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for the `ghostly` client commands: the given token or $GHOSTLY_TOKEN."""
    import os

    token = token or os.environ.get("GHOSTLY_TOKEN")
    return (("authorization", f"Bearer {token}"),) if token else ()


def issue_token(
    *,
    secret: str | None = None,
    private_key: str | None = None,
    algorithm: str = "HS256",
    subject: str,
    role: str,
    issuer: str = "ghostly",
    audience: str = "ghostly-backend",
    ttl_s: float = 3600.0,
) -> str:
    """Mint a token (tests, local tooling, `ghostly token`). Production tokens come from the
    identity provider behind the gateway."""
    import jwt

    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iss": issuer, "aud": audience, "iat": now, "exp": now + int(ttl_s)}
    key = secret if algorithm == "HS256" else _read_key(private_key)
    if key is None:
        raise ValueError(f"a {algorithm} token needs {'a secret' if algorithm == 'HS256' else 'a private key'}")
    return jwt.encode(claims, key, algorithm=algorithm)
