"""API tokens: JWTs signed HS256 with API_SECRET_KEY (CONTRACT section 7).

Minting and verification live here so the `orchestrator token` command and the API agree.
Messages never contain the token or the key.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from shared.errors import Unauthorized

ALGORITHM = "HS256"
ROLES = ("admin", "operator", "viewer", "agent")
REQUIRED_CLAIMS = ("sub", "role", "exp", "iat")
DEFAULT_TTL_SECONDS = 24 * 3600
# Tokens handed to agents at registration: an agent runs for long, and has no refresh
# call; `orchestrator token --role agent --agent-id ID` mints a new one.
AGENT_TTL_SECONDS = 30 * 24 * 3600
MAX_TTL_SECONDS = 366 * 24 * 3600
MAX_TOKEN_CHARS = 4096
# Clocks of the minting host and the API may differ a little.
LEEWAY_SECONDS = 10


@dataclass(frozen=True)
class Claims:
    sub: str
    role: str
    agent_id: uuid.UUID | None
    exp: int
    iat: int


def mint(
    *,
    key: str,
    sub: str,
    role: str,
    agent_id: uuid.UUID | str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: int | None = None,
) -> str:
    """A signed token; ValueError names the argument a token can't be made with."""
    if not sub or not sub.strip():
        raise ValueError("sub must not be blank")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    issued = int(time.time()) if now is None else now
    claims: dict = {"sub": sub, "role": role, "iat": issued, "exp": issued + ttl_seconds}
    if agent_id is not None:
        if role != "agent":
            raise ValueError("agent_id is only for role agent")
        claims["agent_id"] = str(uuid.UUID(str(agent_id)))
    return jwt.encode(claims, key, algorithm=ALGORITHM)


# Tokens already verified, by (key, token): every agent sends the same token with each
# heartbeat, and checking the signature again costs more than the rest of the check. Only
# the expiry can change a verified token's answer, and it is checked on every use.
_verified: dict[tuple[str, str], Claims] = {}
_VERIFIED_MAX = 10_000


def verify(token: str, *, key: str) -> Claims:
    """The token's claims, or Unauthorized saying (without echoing it) what is wrong."""
    claims = _verified.get((key, token))
    if claims is not None:
        if claims.exp + LEEWAY_SECONDS <= time.time():
            _verified.pop((key, token), None)
            raise Unauthorized("The token has expired")
        return claims
    claims = _verify_signed(token, key=key)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[(key, token)] = claims
    return claims


def _verify_signed(token: str, *, key: str) -> Claims:
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("The token is too long")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": list(REQUIRED_CLAIMS)},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"The token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"The token must be signed with {ALGORITHM}") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("The token's signature is not valid") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("The token is not valid") from None
    return _claims(claims)


def _claims(claims: dict) -> Claims:
    sub, role = claims["sub"], claims["role"]
    if not isinstance(sub, str) or not sub.strip():
        raise Unauthorized("The token's 'sub' claim must be a non-blank string")
    if role not in ROLES:
        raise Unauthorized("The token's role is unknown")
    agent_id = claims.get("agent_id")
    if agent_id is not None:
        if role != "agent":
            raise Unauthorized("Only an agent token may carry 'agent_id'")
        try:
            agent_id = uuid.UUID(str(agent_id))
        except ValueError:
            raise Unauthorized("The token's 'agent_id' claim is not a UUID") from None
    return Claims(
        sub=sub, role=role, agent_id=agent_id, exp=int(claims["exp"]), iat=int(claims["iat"])
    )
