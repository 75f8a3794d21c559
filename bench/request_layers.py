"""What each layer of a request costs (issue 18): the app in this process, as gunicorn runs
it (Prometheus in multiprocess mode, the request log at INFO into a file), driven by
Flask's test client on the benchmark's own database and Redis index.

Every hook the app registers (before_request, after_request, teardown) and the view are
timed around their call; the rest of a request (Werkzeug, Flask's dispatch, the test
client) is what is left of the whole. Routes: an unrouted /api/v1 path with an agent's
token, GET /sessions/{id}, a page of 20 tasks, POST /sessions, POST /tasks, a heartbeat;
/health as the floor. The figures are CPU and wait of one request at a time (no
contention), in microseconds, the median of rounds.

Goals (issue 18: per-request logging and metrics "cost microseconds, not milliseconds"):
the request log and the HTTP metrics together <= 250 us a request on the worst route, and
the rate limiter (its before_request hook: one EVALSHA) <= 500 us on the unrouted path.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from functools import wraps

from bench.common import Result, benchmark_database

REQUESTS = int(os.environ.get("BENCH_LAYER_REQUESTS", "300"))
ROUNDS = 3
GOAL_LOG_AND_METRICS_US = 250
GOAL_LIMITER_US = 500

# hook name -> the layer it is reported as
LAYERS = {
    "_start": "request log + metrics",
    "_finish": "request log + metrics",
    "_unbind": "request log + metrics",
    "_check_request_limit": "rate limiter",
    "_commit_or_roll_back": "commit",
}


def run() -> list[Result]:
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-layers-"))
    from orchestrator_api.app import create_app  # after the metrics directory is chosen

    with benchmark_database("request_layers") as settings, tempfile.TemporaryDirectory() as tmp:
        settings = settings.with_overrides(rate_limit="1000000/second", log_level="INFO")
        app = create_app(settings)
        _log_to_file(os.path.join(tmp, "requests.log"))
        spent: dict[str, float] = defaultdict(float)
        _time_hooks(app, spent)
        client = app.test_client()
        routes = _routes(client)
        table = {}
        for name, call in routes.items():
            for _ in range(50):
                call()  # warm up: pools, caches, compiled plans
            rounds = []
            for _ in range(ROUNDS):
                spent.clear()
                started = time.perf_counter()
                for _ in range(REQUESTS):
                    call()
                whole = (time.perf_counter() - started) / REQUESTS * 1e6
                layers = {layer: us / REQUESTS * 1e6 for layer, us in spent.items()}
                layers["rest (Werkzeug, Flask, test client)"] = whole - sum(layers.values())
                rounds.append((whole, layers))
            whole = statistics.median(r[0] for r in rounds)
            layers = {
                layer: statistics.median(r[1].get(layer, 0.0) for r in rounds)
                for layer in rounds[0][1]
            }
            table[name] = (whole, layers)
        _print(table)
    return _results(table)


def _routes(client) -> dict[str, Callable[[], None]]:
    session = client.post("/api/v1/sessions", json={"title": "layers"}).get_json()
    token_agent = client.post(
        "/api/v1/agents/register",
        json={"name": f"layers-{uuid.uuid4()}", "type": "QA", "capabilities": ["TESTING"]},
    ).get_json()
    agent_headers = {"Authorization": f"Bearer {token_agent['token']}"}
    previous = None
    for n in range(40):
        body = {"session_id": session["id"], "title": f"t{n}"}
        if previous:
            body["depends_on"] = [previous]
        previous = client.post("/api/v1/tasks", json=body).get_json()["id"]

    def expect(status: int, response) -> None:
        assert response.status_code == status, (response.status_code, response.data[:300])

    return {
        "/health": lambda: expect(200, client.get("/health")),
        "/api/v1 unrouted (agent token)": lambda: expect(
            404, client.get("/api/v1/nothing/here", headers=agent_headers)
        ),
        "GET /sessions/{id}": lambda: expect(200, client.get(f"/api/v1/sessions/{session['id']}")),
        "GET /tasks?session_id&page_size=20": lambda: expect(
            200, client.get(f"/api/v1/tasks?session_id={session['id']}&page_size=20")
        ),
        "POST /sessions": lambda: expect(201, client.post("/api/v1/sessions", json={"title": "x"})),
        "POST /tasks": lambda: expect(
            201, client.post("/api/v1/tasks", json={"session_id": session["id"], "title": "x"})
        ),
        "POST /agents/{id}/heartbeat": lambda: expect(
            200,
            client.post(
                f"/api/v1/agents/{token_agent['id']}/heartbeat",
                json={"current_load": 0},
                headers=agent_headers,
            ),
        ),
    }


def _time_hooks(app, spent: dict[str, float]) -> None:
    def timed(func, layer: str):
        @wraps(func)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent[layer] += time.perf_counter() - started

        return wrapper

    def layer_of(func) -> str:
        name = getattr(func, "__name__", repr(func))
        module = getattr(func, "__module__", "") or ""
        return LAYERS.get(name, f"{name} ({module.rsplit('.', 1)[-1]})")

    for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        for key, funcs in registry.items():
            registry[key] = [timed(f, layer_of(f)) for f in funcs]
    for endpoint, view in list(app.view_functions.items()):
        app.view_functions[endpoint] = timed(view, "view (parse, service, queries, dump)")


def _log_to_file(path: str) -> None:
    """The request log at INFO, as in production, into a file (not the terminal)."""
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    for existing in root.handlers:
        handler.setFormatter(existing.formatter)
    root.handlers = [handler]


def _print(table: dict) -> None:
    for name, (whole, layers) in table.items():
        print(f"\n{name}: {whole:.0f} us a request")
        for layer, us in sorted(layers.items(), key=lambda item: -item[1]):
            if us >= 1:
                print(f"  {us:8.0f} us  {layer}")


def _results(table: dict) -> list[Result]:
    results = []
    unrouted = table["/api/v1 unrouted (agent token)"][1]
    log_metrics = max(layers.get("request log + metrics", 0.0) for _, layers in table.values())
    results.append(
        Result(
            "request_layers: request log + metrics (worst route)",
            f"{log_metrics:.0f} us",
            f"/health {table['/health'][0]:.0f} us whole",
            f"<= {GOAL_LOG_AND_METRICS_US} us",
            log_metrics <= GOAL_LOG_AND_METRICS_US,
        )
    )
    limiter = unrouted.get("rate limiter", 0.0)
    results.append(
        Result(
            "request_layers: rate limiter (one EVALSHA)",
            f"{limiter:.0f} us",
            f"/health {table['/health'][0]:.0f} us whole",
            f"<= {GOAL_LIMITER_US} us",
            limiter <= GOAL_LIMITER_US,
        )
    )
    return results
