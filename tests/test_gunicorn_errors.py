"""What only a real gunicorn `web` shows (issue 12): its own refusals (request line and
header limits, unparseable requests) in the contract's error body instead of HTML pages,
and chunked bodies (no Content-Length) held to the 1 MiB limit like any other."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from orchestrator_api.request_body import MAX_BODY_BYTES
from tests.support.live_server import live_server_fixture

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

LIMIT_REQUEST_LINE = 4094  # gunicorn.conf.py, docs/API.md
LIMIT_REQUEST_FIELD_SIZE = 8190
LIMIT_REQUEST_FIELDS = 100


web = live_server_fixture(worker=False)


def assert_json_error(response, status: int, code: str) -> dict:
    """The contract's body (CONTRACT section 6), with the X-Request-ID it names."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


class RawResponse:
    """What `raw` read, shaped like a `requests` answer for `assert_json_error`."""

    def __init__(self, answer: http.client.HTTPResponse) -> None:
        self.status_code = answer.status
        self.headers = answer.headers
        self.text = answer.read().decode()

    def json(self):
        return json.loads(self.text)


def raw(web: str, data: bytes) -> RawResponse:
    """Bytes sent as they are (requests and http.client refuse to send malformed ones)."""
    where = urlsplit(web)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(data)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return RawResponse(answer)


def sessions_total(web: str) -> int:
    return requests.get(f"{web}/api/v1/sessions", timeout=10).json()["total"]


# -- The request line and headers ------------------------------------------------------


def test_a_long_path_is_a_json_414(web):
    """A 5,000-character path got gunicorn's HTML "Bad Request" page."""
    response = requests.get(f"{web}/api/v1/sessions/{'a' * 5000}", timeout=10)
    error = assert_json_error(response, 414, "URI_TOO_LONG")
    assert str(LIMIT_REQUEST_LINE) in error["message"]
    response = requests.get(f"{web}/api/v1/sessions", params={"q": "x" * 5000}, timeout=10)
    assert_json_error(response, 414, "URI_TOO_LONG")


def test_a_path_within_the_limit_reaches_the_app(web):
    path = "/api/v1/" + "a" * (LIMIT_REQUEST_LINE - 100)
    assert_json_error(requests.get(f"{web}{path}", timeout=10), 404, "NOT_FOUND")


def test_a_large_header_is_a_json_431(web):
    """A 20 KB header got gunicorn's HTML page."""
    response = requests.get(f"{web}/health", headers={"X-Big": "a" * 20_000}, timeout=10)
    error = assert_json_error(response, 431, "HEADERS_TOO_LARGE")
    assert str(LIMIT_REQUEST_FIELD_SIZE) in error["message"]
    too_many = {f"X-H{i}": "1" for i in range(LIMIT_REQUEST_FIELDS + 1)}
    response = requests.get(f"{web}/health", headers=too_many, timeout=10)
    assert_json_error(response, 431, "HEADERS_TOO_LARGE")


def test_headers_within_the_limits_reach_the_app(web):
    headers = {"X-Big": "a" * (LIMIT_REQUEST_FIELD_SIZE - 100)}
    assert requests.get(f"{web}/health", headers=headers, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "data",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-\xff: y\r\n\r\n",
    ],
)
def test_an_unparseable_request_is_a_json_400(web, data):
    assert_json_error(raw(web, data), 400, "VALIDATION_ERROR")


def test_an_unknown_transfer_coding_is_a_json_501(web):
    data = b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br, chunked\r\n\r\n"
    assert_json_error(raw(web, data), 501, "NOT_IMPLEMENTED")


# -- Chunked bodies --------------------------------------------------------------------


def chunks(body: bytes, size: int = 64 * 1024):
    """A generator: requests sends it with Transfer-Encoding: chunked, no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def post_chunked(web: str, body: bytes) -> requests.Response:
    return requests.post(
        f"{web}/api/v1/sessions",
        data=chunks(body),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def padded(size: int) -> bytes:
    """A valid session body of exactly `size` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"title": "chunked"}).encode()
    return body + b" " * (size - len(body))


def test_a_chunked_body_over_the_limit_is_413(web):
    """A 10 MB chunked body answered 400 "not valid JSON": the stream was cut at 1 MiB."""
    before = sessions_total(web)
    response = post_chunked(web, padded(10 * 1024 * 1024))
    assert_json_error(response, 413, "PAYLOAD_TOO_LARGE")
    response = post_chunked(web, padded(MAX_BODY_BYTES + 1))
    assert_json_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert sessions_total(web) == before


def test_a_chunked_body_up_to_the_limit_is_read(web):
    for size in (100, MAX_BODY_BYTES):
        response = post_chunked(web, padded(size))
        assert response.status_code == 201, response.text
        assert response.json()["title"] == "chunked"


# -- Bodies that reached a 500 under gunicorn ------------------------------------------


def test_deep_json_and_lone_surrogates_are_400_under_gunicorn(web):
    deep = '{"title": "x", "extra": ' + "[" * 500 + "]" * 500 + "}"
    for body in (deep, '{"title": "\\ud800"}'):
        response = requests.post(
            f"{web}/api/v1/sessions",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert_json_error(response, 400, "VALIDATION_ERROR")
