import base64
import json
import subprocess
import time
import uuid

import jwt
import pytest

from shared import tokens
from shared.errors import Unauthorized
from tests.conftest import ROOT

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
    token = tokens.mint(key=KEY, sub="a-1", role="agent", agent_id=agent_id, ttl_seconds=90)
    verified = tokens.verify(token, key=KEY)
    assert verified.sub == "a-1" and verified.role == "agent"
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
    agent_id = str(uuid.uuid4())
    result = run_cli(
        "--role", "agent", "--sub", "bot", "--agent-id", agent_id, "--ttl", "120",
        env={"API_SECRET_KEY": KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    verified = tokens.verify(result.stdout.strip(), key=KEY)
    assert (verified.sub, verified.role, str(verified.agent_id)) == ("bot", "agent", agent_id)
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
    time.sleep(max(0.0, issued + 6 + tokens.LEEWAY_SECONDS - time.time()) + 0.05)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(token, key=KEY)


def test_a_verified_token_is_not_valid_under_another_key():
    token = tokens.mint(key=KEY, sub="someone", role="admin")
    tokens.verify(token, key=KEY)
    with pytest.raises(Unauthorized, match="signature"):
        tokens.verify(token, key="another-key-of-at-least-32-characters!")
