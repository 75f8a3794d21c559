"""The webhook rules that need no server: the address rule, the signature format,
Retry-After, the backoff schedule, and which outcomes are retried."""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from email.utils import formatdate

import pytest

from shared import webhook_http
from shared.config import Settings
from shared.services.webhook_deliveries import backoff

PRODUCTION = Settings(orchestrator_env="production", api_secret_key="k" * 40)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_non_global_addresses_are_not_public(address):
    assert not webhook_http.is_public(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_global_addresses_are_public(address):
    assert webhook_http.is_public(address)


def test_the_rule_applies_in_production_only_unless_allowed():
    assert webhook_http.private_allowed(Settings())
    assert not webhook_http.private_allowed(PRODUCTION)
    assert webhook_http.private_allowed(PRODUCTION.with_overrides(webhook_allow_private=True))
    with pytest.raises(webhook_http.AddressRefused, match="loopback, private or link-local"):
        webhook_http.resolve("localhost", 80, PRODUCTION)
    assert webhook_http.resolve("localhost", 80, Settings()) in ("127.0.0.1", "::1")


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"id":"7"}'
    header = webhook_http.sign("secret-0123456789", 1700000000, body)
    expected = hmac.new(b"secret-0123456789", b"1700000000." + body, hashlib.sha256)
    assert header == f"t=1700000000,v1={expected.hexdigest()}"


def test_retry_after_in_seconds_or_as_a_date():
    assert webhook_http._retry_after("120") == 120.0
    in_a_minute = webhook_http._retry_after(formatdate(time.time() + 60, usegmt=True))
    assert 55 <= in_a_minute <= 61
    assert webhook_http._retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert webhook_http._retry_after("soon") is None
    assert webhook_http._retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "error", "retried"),
    [
        (200, None, False),
        (500, "HTTP 500", True),
        (503, "HTTP 503", True),
        (429, "HTTP 429", True),
        (400, "HTTP 400", False),
        (404, "HTTP 404", False),
        (301, "HTTP 301", False),
        (None, "timed out after 10 s", True),
        (None, "connection error: ConnectionRefusedError", True),
        (None, "refused: 10.0.0.1 is private", False),
    ],
)
def test_which_outcomes_are_retried(status, error, retried):
    assert webhook_http.Outcome(status, 1, error).retryable is retried


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    settings = Settings(webhook_retry_base_seconds=10, webhook_retry_max_delay_seconds=3600)
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(3600, 10 * 2 ** (attempt - 1))
        delays = [backoff(settings, attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed
