"""A frontend on another origin calls the API from Chromium: allowed origins (CORS_ORIGINS)
get answers whose headers they can read, preflights need no token and never count against
the rate limit, and any other origin is refused by the browser."""

from __future__ import annotations

import threading
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest
import requests

from shared import tokens
from tests.support.processes import free_port, running_web

pytestmark = pytest.mark.browser

PRODUCTION_KEY = "cors-tests-" + "k" * 40
PAGE = "<!doctype html><title>another team's dashboard</title>"
CALLS = """async ({api, token}) => {
  const results = [];
  const headers = {'Content-Type': 'application/json', 'Idempotency-Key': '',
                   'X-Request-ID': '', 'Authorization': `Bearer ${token}`};
  try {
    for (let i = 0; i < 3; i++) {
      headers['Idempotency-Key'] = `key-${i}-${Math.random()}`;
      headers['X-Request-ID'] = `cors-${i}`;
      const created = await fetch(`${api}/api/v1/sessions`,
        {method: 'POST', headers, body: JSON.stringify({title: `from another origin ${i}`})});
      results.push([created.status, created.headers.get('X-Request-ID'),
                    created.headers.get('X-RateLimit-Remaining')]);
    }
    const listed = await fetch(`${api}/api/v1/sessions`, {headers});
    results.push([listed.status, listed.headers.get('X-Request-ID'),
                  listed.headers.get('X-RateLimit-Remaining')]);
    return {ok: true, results};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("other-origin")
    (root / "index.html").write_text(PAGE)
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = HTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture(scope="module")
def cors_api(settings, page_server):
    allowed = f"http://127.0.0.1:{page_server}"
    env = {
        "CORS_ORIGINS": f"{allowed},https://elsewhere.example",
        "RATE_LIMIT": "5/minute",
        "ORCHESTRATOR_ENV": "production",
        "API_SECRET_KEY": PRODUCTION_KEY,
    }
    with running_web(settings, **env) as base:
        yield base


def _token(sub: str) -> str:
    return tokens.mint(key=PRODUCTION_KEY, sub=sub, role="operator")


def test_an_allowed_origin_calls_and_reads_the_headers(browser, page_server, cors_api):
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{page_server}/index.html")
        outcome = page.evaluate(CALLS, {"api": cors_api, "token": _token("cors-frontend")})
    finally:
        page.close()
    assert outcome["ok"], outcome
    statuses = [status for status, _, _ in outcome["results"]]
    # three preflighted POSTs and a GET on a budget of 5: preflights did not count
    assert statuses == [201, 201, 201, 200], outcome
    assert [rid for _, rid, _ in outcome["results"]] == ["cors-0", "cors-1", "cors-2", "cors-2"]
    assert outcome["results"][-1][2] == "1"  # X-RateLimit-Remaining is readable


def test_another_origin_is_refused_by_the_browser(browser, page_server, cors_api):
    page = browser.new_page()
    try:
        # localhost is another origin than 127.0.0.1, and it is not in CORS_ORIGINS
        page.goto(f"http://localhost:{page_server}/index.html")
        outcome = page.evaluate(CALLS, {"api": cors_api, "token": _token("cors-stranger")})
    finally:
        page.close()
    assert not outcome["ok"] and "Failed to fetch" in outcome["error"], outcome


def test_preflights_need_no_token_and_are_never_counted(cors_api):
    origin = "https://elsewhere.example"
    for _ in range(8):
        answer = requests.options(
            f"{cors_api}/api/v1/tasks",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
            timeout=5,
        )
        assert answer.status_code == 204
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert "Idempotency-Key" in answer.headers["Access-Control-Allow-Headers"]
        assert "X-RateLimit-Limit" not in answer.headers
    # an error answer carries the CORS headers too, so the frontend can read it
    refused = requests.get(f"{cors_api}/api/v1/sessions", headers={"Origin": origin}, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == origin
    assert "X-Request-ID" in refused.headers["Access-Control-Expose-Headers"]
    stranger = requests.options(
        f"{cors_api}/api/v1/tasks",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert stranger.status_code == 204
    assert "Access-Control-Allow-Origin" not in stranger.headers
