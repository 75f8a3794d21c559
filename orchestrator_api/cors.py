"""CORS for browser frontends on other origins (CORS_ORIGINS; none by default).

Preflights are answered here, before authentication and the rate limiter, so they need
no token and never count against a client's budget; every answer to an allowed origin
(errors included) says so and exposes the headers a client reads.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
EXPOSED_HEADERS = (
    "X-Request-ID, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
    "Idempotent-Replayed"
)
PREFLIGHT_MAX_AGE = "600"


def parse_origins(raw: str) -> frozenset[str]:
    """`CORS_ORIGINS`: comma-separated origins (`https://app.example.com`), or `*`."""
    return frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


class Cors:
    def __init__(self, origins: frozenset[str]) -> None:
        self.origins = origins

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin in self.origins)

    def answer_preflight(self) -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        response = Response(status=204)
        origin = request.headers.get("Origin")
        if self.allows(origin):
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response

    def add_headers(self, response: Response) -> Response:
        origin = request.headers.get("Origin")
        response.vary.add("Origin")
        if self.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in self.origins else origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response


def register(app: Flask, origins: frozenset[str]) -> None:
    """Before the rate limiter and auth hooks are registered: a preflight stops here
    (with no CORS_ORIGINS it is answered without any Access-Control-Allow-* header, so
    the browser refuses the call, and it is still never counted)."""
    cors = Cors(origins)
    app.before_request(cors.answer_preflight)
    app.after_request(cors.add_headers)
