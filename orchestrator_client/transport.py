"""HTTP for the client: per-thread connection pools, retries with backoff, Retry-After,
the Idempotency-Key of POSTs, and error answers turned into exceptions.

A request that gets no answer (connection refused or reset, timeout) or a transient
refusal (429, 502, 503 other than AGENT_UNAVAILABLE, 504) is sent again, up to `retries`
more times, with exponential backoff and jitter, or after the server's `Retry-After`
when it gives one. Every POST carries an `Idempotency-Key`, new for each call and the
same on its retries, so the server answers a repeat with the first answer instead of
acting twice (CONTRACT section 6).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import Any, Self

import requests

from orchestrator_client import __version__
from orchestrator_client.errors import ConnectionFailed, OrchestratorError, error_for

log = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:8000"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A 503 that is an answer, not an outage: no agent fits now. Retrying would only hide it.
FINAL_CODES = frozenset({"AGENT_UNAVAILABLE"})
TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class HttpClient:
    """Thread-safe: each thread gets its own HTTP connection pool.

    `timeout` is seconds per attempt (or a `(connect, read)` pair); `retries` how many
    times a call is sent again; `backoff` the first wait, doubled each time up to
    `max_backoff`; a `Retry-After` longer than `max_retry_after` is not waited for (the
    error is raised). `ws_url` serves the WebSocket streams when they are not on
    `base_url` (default: `base_url` with ws:// or wss://).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float | tuple[float, float] = 10.0,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 60.0,
        ws_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token or None
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.ws_url = (ws_url or _ws_url(self.base_url)).rstrip("/")
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def with_token(self, token: str | None) -> Self:
        """The same client acting with another token (an agent's own, say)."""
        return type(self)(
            self.base_url,
            token,
            self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            max_retry_after=self.max_retry_after,
            ws_url=self.ws_url,
        )

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> Any:
        query = {
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in params.items()
            if v is not None
        }
        return self._request("GET", path, params=query)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body or {})

    def _http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"orchestrator-client/{__version__}"
            session.headers["Accept"] = "application/json"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _request(self, method: str, path: str, *, params=None, json=None) -> Any:
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())  # the same on every retry
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                response = self._http().request(
                    method, url, params=params, json=json, headers=headers, timeout=self.timeout
                )
            except TRANSPORT_ERRORS as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(
                        message=f"{method} {url}: no answer after {attempt + 1} attempts "
                        f"({exc.__class__.__name__})"
                    ) from exc
                delay, why = self._backoff_delay(attempt), exc.__class__.__name__
            else:
                if response.status_code < 400:
                    return _decode(response)
                error = _error(response)
                if not _retryable(error) or attempt >= self.retries:
                    raise error
                delay, why = self._backoff_delay(attempt), f"{error.status} {error.code}"
                if error.retry_after is not None:
                    if error.retry_after > self.max_retry_after:
                        raise error
                    delay = error.retry_after
            attempt += 1
            if why.startswith("429"):
                # Waiting on the server's rate limit is said plainly: it can take a minute.
                log.warning(
                    "rate limited by the server (429): waiting %.0fs before sending %s %s "
                    "again (RATE_LIMIT counts requests per client)",
                    delay,
                    method,
                    path,
                )
            else:
                log.info("%s %s: %s; retry %d in %.2fs", method, path, why, attempt, delay)
            time.sleep(delay)

    def _backoff_delay(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return ceiling * random.uniform(0.5, 1.0)


def _retryable(error: OrchestratorError) -> bool:
    return error.status in RETRY_STATUSES and error.code not in FINAL_CODES


def _decode(response: requests.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _error(response: requests.Response) -> OrchestratorError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return error_for(
        response.status_code,
        body,
        request_id=response.headers.get("X-Request-ID"),
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _retry_after(raw: str | None) -> float | None:
    """Seconds to wait (an HTTP date is read too); None when absent or unreadable."""
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url
