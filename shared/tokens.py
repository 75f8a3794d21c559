"""API tokens: JWTs signed HS256 with API_SECRET_KEY (CONTRACT section 7).

Minting and verification live here so the `orchestrator token` command and the API agree.
Messages never contain the token or the key.

Identities: a token for an agent (with `agent_id`) has the `sub` `agent:<agent_id>`, a
namespace of its own, so no agent (whatever its name) can be taken for a person; a
person's `sub` may not start with `agent:`. A token lives at most `max_ttl_seconds`
(TOKEN_MAX_TTL_SECONDS): `exp - iat` is checked at verification, whatever the token says.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from shared.config import DEFAULT_TOKEN_MAX_TTL_SECONDS
from shared.errors import Unauthorized
from shared.pools import POOL_RULE
from shared.pools import is_valid as is_valid_pool

ALGORITHM = "HS256"
ROLES = ("admin", "operator", "viewer", "agent")
REQUIRED_CLAIMS = ("sub", "role", "exp", "iat")
DEFAULT_TTL_SECONDS = 24 * 3600
# Tokens handed to agents at registration: an agent runs for long, and has no refresh
# call; `orchestrator token --role agent --agent-id ID` mints a new one. Capped by
# TOKEN_MAX_TTL_SECONDS where that is shorter.
AGENT_TTL_SECONDS = 30 * 24 * 3600
# The default of TOKEN_MAX_TTL_SECONDS: the agent tokens' 30 days, and a day of margin.
DEFAULT_MAX_TTL_SECONDS = DEFAULT_TOKEN_MAX_TTL_SECONDS
AGENT_SUB_PREFIX = "agent:"
MAX_TOKEN_CHARS = 4096
# Clocks of the minting host and the API may differ a little.
LEEWAY_SECONDS = 10
# exp and iat are NumericDates: numbers of seconds since the epoch. Anything outside
# [0, year 5138] is refused before any arithmetic (no float overflow, no 1e308 lifetime).
MAX_NUMERIC_DATE = 10**11


@dataclass(frozen=True)
class Claims:
    sub: str
    role: str
    agent_id: uuid.UUID | None
    exp: int
    iat: int
    # The pools the token may see and act in; None: every pool (no `pools` claim).
    pools: frozenset[str] | None = None


def agent_sub(agent_id: uuid.UUID | str) -> str:
    """The `sub` of every token minted for this agent."""
    return f"{AGENT_SUB_PREFIX}{uuid.UUID(str(agent_id))}"


def mint(
    *,
    key: str,
    sub: str | None = None,
    role: str,
    agent_id: uuid.UUID | str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: int | None = None,
    max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
    pools: Iterable[str] | None = None,
) -> str:
    """A signed token; ValueError names the argument a token can't be made with.

    With `agent_id` the token's `sub` is always `agent:<agent_id>` (`sub` is not used).
    With `pools` the token sees and acts only in those pools (docs/API.md, "Pools")."""
    if pools is not None:
        pools = sorted(set(pools))
        bad = [p for p in pools if not is_valid_pool(p)]
        if not pools or bad:
            raise ValueError(f"pools must be 1 or more pool names ({POOL_RULE}), got {bad}")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if agent_id is not None:
        if role != "agent":
            raise ValueError("agent_id is only for role agent")
        sub = agent_sub(agent_id)
    elif not sub or not sub.strip():
        raise ValueError("sub must not be blank")
    elif sub.startswith(AGENT_SUB_PREFIX):
        raise ValueError(
            f"sub must not start with {AGENT_SUB_PREFIX!r}: that namespace is for tokens "
            "minted for an agent (give its agent_id instead)"
        )
    if not 1 <= ttl_seconds <= max_ttl_seconds:
        raise ValueError(
            f"ttl must be between 1 and {max_ttl_seconds} seconds (TOKEN_MAX_TTL_SECONDS)"
        )
    issued = int(time.time()) if now is None else now
    claims: dict = {"sub": sub, "role": role, "iat": issued, "exp": issued + ttl_seconds}
    if agent_id is not None:
        claims["agent_id"] = str(uuid.UUID(str(agent_id)))
    if pools is not None:
        claims["pools"] = pools
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def mint_agent(
    *,
    key: str,
    agent_id: uuid.UUID | str,
    max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
    pools: Iterable[str] | None = None,
) -> str:
    """The token a registration hands to its agent: 30 days, or the cap if shorter."""
    return mint(
        key=key,
        role="agent",
        agent_id=agent_id,
        ttl_seconds=min(AGENT_TTL_SECONDS, max_ttl_seconds),
        max_ttl_seconds=max_ttl_seconds,
        pools=pools,
    )


# Tokens already verified, by (key, token): every agent sends the same token with each
# heartbeat, and checking the signature again costs more than the rest of the check. Only
# the expiry (and the lifetime cap, a setting) can change a verified token's answer, and
# both are checked on every use.
_verified: dict[tuple[str, str], Claims] = {}
_VERIFIED_MAX = 10_000


def verify(token: str, *, key: str, max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS) -> Claims:
    """The token's claims, or Unauthorized saying (without echoing it) what is wrong."""
    claims = _verified.get((key, token))
    if claims is not None:
        if claims.exp + LEEWAY_SECONDS <= time.time():
            _verified.pop((key, token), None)
            raise Unauthorized("The token has expired")
    else:
        claims = _verify_signed(token, key=key)
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[(key, token)] = claims
    if claims.exp - claims.iat > max_ttl_seconds:
        raise Unauthorized(
            f"The token's lifetime (exp - iat) is longer than this server accepts "
            f"({max_ttl_seconds} seconds)"
        )
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
    except jwt.ImmatureSignatureError:
        raise Unauthorized("The token is not valid yet (issued in the future)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"The token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"The token must be signed with {ALGORITHM}") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("The token's signature is not valid") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("The token is not valid") from None
    return _claims(claims)


def _numeric_date(claims: dict, name: str) -> int:
    """A NumericDate claim as whole seconds; a string, a bool, NaN, an infinity or a
    number out of range is refused (PyJWT would take "123" and 1e308)."""
    value = claims[name]
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    # compared before any conversion: int and float compare exactly, NaN compares False
    if not valid or not 0 <= value <= MAX_NUMERIC_DATE:
        raise Unauthorized(f"The token's {name!r} claim must be a number of seconds since 1970")
    return math.floor(value)


def _claims(claims: dict) -> Claims:
    sub, role = claims["sub"], claims["role"]
    if not isinstance(sub, str) or not sub.strip():
        raise Unauthorized("The token's 'sub' claim must be a non-blank string")
    if not isinstance(role, str) or role not in ROLES:
        raise Unauthorized("The token's role is unknown")
    exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
    agent_id = claims.get("agent_id")
    if agent_id is not None:
        if role != "agent":
            raise Unauthorized("Only an agent token may carry 'agent_id'")
        try:
            agent_id = uuid.UUID(str(agent_id))
        except ValueError:
            raise Unauthorized("The token's 'agent_id' claim is not a UUID") from None
        # tokens from before the namespace carry the agent's name: their identity is
        # still the agent (orchestrator_api/auth.py keys by agent_id), not that name
        if sub.startswith(AGENT_SUB_PREFIX) and sub != agent_sub(agent_id):
            raise Unauthorized("The token's 'sub' names another agent than its 'agent_id'")
    elif sub.startswith(AGENT_SUB_PREFIX):
        raise Unauthorized(f"A 'sub' starting with {AGENT_SUB_PREFIX!r} needs its 'agent_id'")
    return Claims(sub=sub, role=role, agent_id=agent_id, exp=exp, iat=iat, pools=_pools(claims))


def _pools(claims: dict) -> frozenset[str] | None:
    if "pools" not in claims:
        return None
    pools = claims["pools"]
    if (
        not isinstance(pools, list)
        or not pools
        or not all(isinstance(p, str) and is_valid_pool(p) for p in pools)
    ):
        raise Unauthorized(f"The token's 'pools' claim must be a list of pool names ({POOL_RULE})")
    return frozenset(pools)
