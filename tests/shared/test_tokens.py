import base64
import json
import subprocess
import time
import uuid

import jwt
import pytest

from shared import tokens
from shared.errors import Unauthorized
from tests.support import ROOT

KEY = "k" * 64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: bytes = b"x" * 32) -> str:
    """A token with any header, signed with nothing valid."""
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), signature)
    return ".".join(_b64(p) for p in parts)


def claims(**changes):
    now = int(time.time())
    return {"sub": "alice", "role": "admin", "iat": now, "exp": now + 60, **changes}


def test_mint_then_verify():
    agent_id = uuid.uuid4()
    token = tokens.mint(key=KEY, role="agent", agent_id=agent_id, ttl_seconds=90)
    verified = tokens.verify(token, key=KEY)
    assert verified.sub == f"agent:{agent_id}" and verified.role == "agent"
    assert verified.agent_id == agent_id
    assert verified.exp - verified.iat == 90
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


# Made when the test runs (not at collection, which can be minutes earlier).
BAD_TOKENS = {
    "alg none": (lambda: jwt.encode(claims(), None, algorithm="none"), "HS256"),
    "alg HS512": (lambda: jwt.encode(claims(), KEY, algorithm="HS512"), "HS256"),
    "alg RS256": (lambda: forge({"alg": "RS256", "typ": "JWT"}, claims()), "HS256"),
    "other key": (lambda: jwt.encode(claims(), "w" * 64, algorithm="HS256"), "signature"),
    "expired": (lambda: sign(claims(exp=int(time.time()) - 60)), "expired"),
    "unknown role": (lambda: sign(claims(role="root")), "role"),
    "null role": (lambda: sign(claims(role=None)), "role"),
    "blank sub": (lambda: sign(claims(sub=" ")), "sub"),
    "issued later": (lambda: sign(claims(iat=int(time.time()) + 3600)), "not valid"),
    "bad agent_id": (lambda: sign(claims(agent_id="nope", role="agent")), "agent_id"),
    "admin agent_id": (lambda: sign(claims(agent_id=str(uuid.uuid4()))), "agent_id"),
    "not a JWT": (lambda: "not-a-jwt", "not valid"),
    "huge": (lambda: "a" * 5000, "too long"),
}


def sign(payload):
    return jwt.encode(payload, KEY, algorithm="HS256")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_without_echoing_them(kind):
    make, message = BAD_TOKENS[kind]
    token = make()
    with pytest.raises(Unauthorized) as excinfo:
        tokens.verify(token, key=KEY)
    assert message in excinfo.value.message
    assert token[:20] not in excinfo.value.message and KEY not in excinfo.value.message


@pytest.mark.parametrize("missing", ["sub", "role", "exp", "iat"])
def test_each_required_claim_is_required(missing):
    payload = claims()
    del payload[missing]
    with pytest.raises(Unauthorized, match=missing):
        tokens.verify(jwt.encode(payload, KEY, algorithm="HS256"), key=KEY)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": "root"},
        {"sub": ""},
        {"ttl_seconds": 0},
        {"role": "admin", "agent_id": uuid.uuid4()},
    ],
)
def test_mint_refuses_what_verify_would_refuse(kwargs):
    with pytest.raises(ValueError):
        tokens.mint(key=KEY, **{"sub": "alice", "role": "agent", **kwargs})


def run_cli(*args, env=None):
    return subprocess.run(
        [f"{ROOT}/.venv/bin/orchestrator", "token", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_token_command_prints_a_token_the_api_accepts():
    result = run_cli(
        "--role", "operator", "--sub", "bot", "--ttl", "120", env={"API_SECRET_KEY": KEY}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    verified = tokens.verify(result.stdout.strip(), key=KEY)
    assert (verified.sub, verified.role, verified.agent_id) == ("bot", "operator", None)
    assert verified.exp - verified.iat == 120


def test_the_token_command_warns_about_the_development_key():
    result = run_cli("--role", "viewer", "--sub", "carol")
    assert result.returncode == 0
    assert "development key" in result.stderr
    from shared.config import DEVELOPMENT_SECRET_KEY

    assert tokens.verify(result.stdout.strip(), key=DEVELOPMENT_SECRET_KEY).role == "viewer"


@pytest.mark.parametrize(
    "args",
    [
        ("--role", "root", "--sub", "x"),
        ("--role", "admin"),
        ("--role", "admin", "--sub", "x", "--agent-id", str(uuid.uuid4())),
        ("--role", "agent", "--sub", "x", "--agent-id", "nope"),
        ("--role", "admin", "--sub", "x", "--ttl", "0"),
    ],
)
def test_the_token_command_refuses_bad_arguments(args):
    result = run_cli(*args, env={"API_SECRET_KEY": KEY})
    assert result.returncode != 0
    assert result.stdout == ""


def test_a_verified_token_still_expires():
    # valid for about one more second, counting the leeway; verified (and remembered) now
    issued = int(time.time()) - tokens.LEEWAY_SECONDS - 5
    token = tokens.mint(key=KEY, sub="short", role="viewer", ttl_seconds=6, now=issued)
    assert tokens.verify(token, key=KEY).sub == "short"
    assert tokens.verify(token, key=KEY).sub == "short"
    # verify reads the clock itself: real time must pass the expiry (about a second)
    time.sleep(max(0.0, issued + 6 + tokens.LEEWAY_SECONDS - time.time()) + 0.05)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(token, key=KEY)


def test_a_verified_token_is_not_valid_under_another_key():
    token = tokens.mint(key=KEY, sub="someone", role="admin")
    tokens.verify(token, key=KEY)
    with pytest.raises(Unauthorized, match="signature"):
        tokens.verify(token, key="another-key-of-at-least-32-characters!")


# --- lifetimes and NumericDates (issue 12) -------------------------------------------------


def sign_raw(payload: str, key: str = KEY) -> str:
    """A token whose payload is this exact JSON text, validly signed."""
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(payload.encode())
    signature = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def raw_claims(exp, iat=None) -> str:
    iat = int(time.time()) if iat is None else iat
    return f'{{"sub": "alice", "role": "admin", "iat": {iat}, "exp": {exp}}}'


# Each a payload, made when the test runs.
ABSURD_DATES = {
    "exp 1e308": lambda: raw_claims("1e308"),
    "exp of 400 digits": lambda: raw_claims("9" * 400),
    "exp a year away": lambda: raw_claims(int(time.time()) + 366 * 24 * 3600),
    "exp just over the cap": lambda: raw_claims(
        int(time.time()) + tokens.DEFAULT_MAX_TTL_SECONDS + 1
    ),
    "exp Infinity": lambda: raw_claims("Infinity"),
    "exp NaN": lambda: raw_claims("NaN"),
    "exp a string": lambda: raw_claims(f'"{int(time.time()) + 60}"'),
    "exp true": lambda: raw_claims("true"),
    "exp a list": lambda: raw_claims("[1]"),
    "exp an object": lambda: raw_claims("{}"),
    "iat -1e308": lambda: raw_claims(int(time.time()) + 60, iat="-1e308"),
    "iat of 400 negative digits": lambda: raw_claims(int(time.time()) + 60, iat="-" + "9" * 400),
    "iat 1e308": lambda: raw_claims(int(time.time()) + 60, iat="1e308"),
    "iat a string": lambda: raw_claims(int(time.time()) + 60, iat='"0"'),
    "iat NaN": lambda: raw_claims(int(time.time()) + 60, iat="NaN"),
    "iat an hour ahead": lambda: raw_claims(int(time.time()) + 7200, iat=int(time.time()) + 3600),
}


@pytest.mark.parametrize("kind", sorted(ABSURD_DATES))
def test_absurd_lifetimes_and_dates_are_refused(kind):
    with pytest.raises(Unauthorized):
        tokens.verify(sign_raw(ABSURD_DATES[kind]()), key=KEY)


def test_the_cap_is_a_setting_and_holds_for_a_token_already_verified():
    token = tokens.mint(key=KEY, sub="capped", role="viewer", ttl_seconds=7200)
    assert tokens.verify(token, key=KEY).sub == "capped"  # remembered now
    with pytest.raises(Unauthorized, match="lifetime"):
        tokens.verify(token, key=KEY, max_ttl_seconds=3600)
    assert tokens.verify(token, key=KEY, max_ttl_seconds=7200).sub == "capped"


def test_iat_within_the_leeway_and_fractional_dates_are_fine():
    now = int(time.time())
    assert tokens.verify(sign_raw(raw_claims(now + 60, iat=now + 5)), key=KEY).iat == now + 5
    verified = tokens.verify(sign_raw(raw_claims(f"{now + 60}.5", iat=f"{now}.25")), key=KEY)
    assert (verified.exp, verified.iat) == (now + 60, now)


def test_mint_refuses_a_ttl_over_the_cap():
    with pytest.raises(ValueError, match="TOKEN_MAX_TTL_SECONDS"):
        tokens.mint(key=KEY, sub="x", role="admin", ttl_seconds=tokens.DEFAULT_MAX_TTL_SECONDS + 1)
    with pytest.raises(ValueError):
        tokens.mint(key=KEY, sub="x", role="admin", ttl_seconds=3601, max_ttl_seconds=3600)


def test_the_default_cap_covers_agent_tokens_and_is_the_settings_default():
    from shared.config import Settings

    assert tokens.AGENT_TTL_SECONDS < tokens.DEFAULT_MAX_TTL_SECONDS <= 32 * 24 * 3600
    assert Settings().token_max_ttl_seconds == tokens.DEFAULT_MAX_TTL_SECONDS
    assert Settings.from_env({"TOKEN_MAX_TTL_SECONDS": "3600"}).token_max_ttl_seconds == 3600
    # a cap shorter than 30 days shortens the registration tokens with it
    short = tokens.verify(
        tokens.mint_agent(key=KEY, agent_id=uuid.uuid4(), max_ttl_seconds=3600),
        key=KEY,
        max_ttl_seconds=3600,
    )
    assert short.exp - short.iat == 3600


# --- identities: agents in a namespace of their own (issue 12) ----------------------------


def test_an_agent_token_is_named_after_its_agent_not_its_name():
    agent_id = uuid.uuid4()
    token = tokens.mint(key=KEY, sub="alice", role="agent", agent_id=agent_id)
    verified = tokens.verify(token, key=KEY)
    assert verified.sub == f"agent:{agent_id}" == tokens.agent_sub(agent_id)
    registered = tokens.verify(tokens.mint_agent(key=KEY, agent_id=agent_id), key=KEY)
    assert registered.sub == f"agent:{agent_id}" and registered.agent_id == agent_id
    assert registered.exp - registered.iat == tokens.AGENT_TTL_SECONDS


def test_a_persons_sub_may_not_be_in_the_agents_namespace():
    with pytest.raises(ValueError, match="agent:"):
        tokens.mint(key=KEY, sub=f"agent:{uuid.uuid4()}", role="admin")
    with pytest.raises(ValueError, match="agent:"):
        tokens.mint(key=KEY, sub="agent:fleet", role="agent")
    forged = sign(claims(sub=f"agent:{uuid.uuid4()}", role="operator"))
    with pytest.raises(Unauthorized, match="agent_id"):
        tokens.verify(forged, key=KEY)
    other = sign(claims(sub=f"agent:{uuid.uuid4()}", role="agent", agent_id=str(uuid.uuid4())))
    with pytest.raises(Unauthorized, match="another agent"):
        tokens.verify(other, key=KEY)


def test_a_token_from_before_the_namespace_still_works():
    """Registration tokens of up to 30 days ago carry the agent's name as `sub`; the API
    keys them by their agent_id (tests/api/test_rate_limits.py)."""
    agent_id = uuid.uuid4()
    legacy = sign(claims(sub="alice", role="agent", agent_id=str(agent_id)))
    assert tokens.verify(legacy, key=KEY).agent_id == agent_id


def test_the_token_command_mints_agent_tokens_in_their_namespace():
    agent_id = str(uuid.uuid4())
    result = run_cli("--role", "agent", "--agent-id", agent_id, env={"API_SECRET_KEY": KEY})
    assert result.returncode == 0, result.stderr
    verified = tokens.verify(result.stdout.strip(), key=KEY)
    assert verified.sub == f"agent:{agent_id}" and str(verified.agent_id) == agent_id
    same = run_cli(
        "--role", "agent", "--sub", f"agent:{agent_id}", "--agent-id", agent_id,
        env={"API_SECRET_KEY": KEY},
    )  # fmt: skip
    assert same.returncode == 0, same.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--role", "operator", "--sub", "agent:someone"),
        ("--role", "agent", "--sub", "agent:fleet"),
        ("--role", "agent", "--sub", "bot", "--agent-id", str(uuid.uuid4())),
        ("--role", "agent"),
        ("--role", "admin", "--sub", "x", "--ttl", str(tokens.DEFAULT_MAX_TTL_SECONDS + 1)),
    ],
)
def test_the_token_command_refuses_what_the_api_would(args):
    result = run_cli(*args, env={"API_SECRET_KEY": KEY})
    assert result.returncode != 0
    assert result.stdout == ""


def test_the_token_command_follows_the_servers_cap():
    env = {"API_SECRET_KEY": KEY, "TOKEN_MAX_TTL_SECONDS": "3600"}
    refused = run_cli("--role", "admin", "--sub", "x", "--ttl", "3601", env=env)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "TOKEN_MAX_TTL_SECONDS" in refused.stderr
    assert run_cli("--role", "admin", "--sub", "x", "--ttl", "3600", env=env).returncode == 0
