"""Authentication and authorisation (CONTRACT section 7), in process, in both modes."""

from __future__ import annotations

import logging
import time
import uuid
import warnings

import jwt
import pytest

from orchestrator_api import auth
from shared import tokens
from shared.config import DEVELOPMENT_SECRET_KEY as DEV_KEY
from tests.api.helpers import act, assert_error, make_task, start_session

KEY = "production-key-" + "p" * 49  # 64 characters


@pytest.fixture(scope="module")
def prod_app(settings, database):
    from orchestrator_api.app import create_app

    flask_app = create_app(
        settings.with_overrides(orchestrator_env="production", api_secret_key=KEY)
    )
    flask_app.extensions["orchestrator"].database.dispose()
    flask_app.extensions["orchestrator"].database = database
    return flask_app


def token(role="admin", sub="alice", agent_id=None, key=KEY):
    return tokens.mint(key=key, sub=sub, role=role, agent_id=agent_id)


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def as_role(prod_app):
    """A test client of the production app that sends this role's token."""

    def make(role="admin", agent_id=None, sub="alice"):
        client = prod_app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token(role, sub, agent_id)}"
        return client

    return make


@pytest.fixture
def admin(as_role):
    return as_role("admin")


def register_agent(client, name):
    body = {"name": name, "type": "BACKEND", "capabilities": ["CODE_GENERATION"]}
    response = client.post("/api/v1/agents/register", json=body)
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def fleet(admin):
    """Agents A and B, each holding one ASSIGNED task, with their own tokens."""
    session = start_session(admin)
    agents = {}
    for name in ("A", "B"):
        agent = register_agent(admin, f"agent-{name}-{uuid.uuid4().hex[:6]}")
        task = make_task(admin, session["id"], title=f"task of {name}")
        assigned = act(admin, task["id"], "assign", {"agent_id": agent["id"]})
        assert assigned.status_code == 200, assigned.json
        agents[name] = {**agent, "task": task["id"], "session": session["id"]}
    return agents


def agent_client(prod_app, agent):
    client = prod_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {agent['token']}"
    return client


# --- 401: no token in production; a bad token in either mode ----------------------------

API_ROUTES = [
    ("GET", "/api/v1/sessions"),
    ("POST", "/api/v1/sessions"),
    ("GET", f"/api/v1/sessions/{uuid.uuid4()}"),
    ("POST", f"/api/v1/sessions/{uuid.uuid4()}/start"),
    ("GET", "/api/v1/agents"),
    ("POST", "/api/v1/agents/register"),
    ("GET", f"/api/v1/agents/{uuid.uuid4()}"),
    ("DELETE", f"/api/v1/agents/{uuid.uuid4()}"),
    ("POST", f"/api/v1/agents/{uuid.uuid4()}/heartbeat"),
    ("GET", f"/api/v1/agents/{uuid.uuid4()}/tasks"),
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("GET", f"/api/v1/tasks/{uuid.uuid4()}"),
    ("POST", f"/api/v1/tasks/{uuid.uuid4()}/start"),
    ("POST", f"/api/v1/tasks/{uuid.uuid4()}/decompose"),
    ("GET", "/api/v1/no-such-route"),
]


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_production_needs_a_token_on_every_api_route(prod_app, method, path):
    response = prod_app.test_client().open(path, method=method, json={})
    error = assert_error(response, 401, "UNAUTHORIZED")
    assert error["message"] == "A bearer token is required"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/health", "/ready", "/openapi.json", "/docs"])
def test_production_leaves_health_and_docs_open(prod_app, path):
    assert prod_app.test_client().get(path).status_code == 200


def test_production_metrics_is_not_behind_auth(prod_app):
    # no /metrics yet: whatever it answers, it is not a 401
    assert prod_app.test_client().get("/metrics").status_code != 401


def _now():
    return int(time.time())


def _claims(**changes):
    return {"sub": "mallory", "role": "admin", "iat": _now(), "exp": _now() + 60, **changes}


def _signed(claims, key, algorithm="HS256"):
    with warnings.catch_warnings():  # HS512 with a key shorter than 64 bytes
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=algorithm)


def _without(name, key):
    claims = _claims()
    del claims[name]
    return _signed(claims, key)


# Each takes the server's key, so that only the named defect is wrong.
BAD_TOKENS = {
    "alg none": lambda key: jwt.encode(_claims(), None, algorithm="none"),
    "alg HS512": lambda key: _signed(_claims(), key, algorithm="HS512"),
    "wrong signature": lambda key: _signed(_claims(), "another-" + key),
    "development key": lambda key: _signed(_claims(), DEV_KEY),
    "expired": lambda key: _signed(_claims(exp=_now() - 60), key),
    "no sub": lambda key: _without("sub", key),
    "no role": lambda key: _without("role", key),
    "no exp": lambda key: _without("exp", key),
    "no iat": lambda key: _without("iat", key),
    "unknown role": lambda key: _signed(_claims(role="superuser"), key),
    "agent_id on an admin": lambda key: _signed(_claims(agent_id=str(uuid.uuid4())), key),
    "garbage": lambda key: "garbage",
    # lifetimes and dates (issue 12): each a 401, never a 500 nor a token for ever
    "exp 1e308": lambda key: _signed(_claims(exp=1e308), key),
    "exp of 400 digits": lambda key: _signed(_claims(exp=10**400), key),
    "exp a year away": lambda key: _signed(_claims(exp=_now() + 366 * 86400), key),
    "exp infinite": lambda key: _signed(_claims(exp=float("inf")), key),
    "exp NaN": lambda key: _signed(_claims(exp=float("nan")), key),
    "exp a string": lambda key: _signed(_claims(exp=str(_now() + 60)), key),
    "iat -1e308": lambda key: _signed(_claims(iat=-1e308), key),
    "iat 1e308": lambda key: _signed(_claims(iat=1e308), key),
    "iat an hour ahead": lambda key: _signed(_claims(iat=_now() + 3600, exp=_now() + 7200), key),
    "iat a list": lambda key: _signed(_claims(iat=[1]), key),
    # a person's sub in the agents' namespace
    "sub agent: on an operator": lambda key: _signed(
        _claims(sub=f"agent:{uuid.uuid4()}", role="operator"), key
    ),
}


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (mode, kind)
        for mode in ("production", "development")
        for kind in sorted(BAD_TOKENS)
        # the development key is the key of a development server
        if (mode, kind) != ("development", "development key")
    ],
)
def test_a_bad_token_is_401_in_both_modes(prod_app, app, mode, kind, caplog):
    flask_app, key = (prod_app, KEY) if mode == "production" else (app, DEV_KEY)
    bad = BAD_TOKENS[kind](key)
    caplog.set_level(logging.DEBUG)
    response = flask_app.test_client().get("/api/v1/sessions", headers=bearer(bad))
    assert_error(response, 401, "UNAUTHORIZED")
    # secrets never reach a body or a log
    assert bad not in response.get_data(as_text=True)
    assert bad not in caplog.text and key not in caplog.text


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Token abc", "Bearer a b"])
def test_a_malformed_authorization_header_is_401(prod_app, header):
    response = prod_app.test_client().get("/api/v1/sessions", headers={"Authorization": header})
    assert_error(response, 401, "UNAUTHORIZED")


def test_development_needs_no_token_but_honours_one(client):
    assert client.post("/api/v1/sessions", json={"title": "anonymous"}).status_code == 201
    viewer = bearer(token("viewer", key=DEV_KEY))
    assert client.get("/api/v1/sessions", headers=viewer).status_code == 200
    response = client.post("/api/v1/sessions", json={"title": "x"}, headers=viewer)
    assert_error(response, 403, "FORBIDDEN")


# --- roles on route classes ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_and_operator_may_do_everything(as_role, role):
    client = as_role(role)
    session = start_session(client)
    agent = register_agent(client, f"worker-{role}")
    task = make_task(client, session["id"])
    assert client.get("/api/v1/sessions").status_code == 200
    assert client.get(f"/api/v1/tasks/{task['id']}").status_code == 200
    assert act(client, task["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    assert act(client, task["id"], "start", {"agent_id": agent["id"]}).status_code == 200
    assert act(client, task["id"], "complete", {"result": {}}).status_code == 200
    heartbeat = client.post(f"/api/v1/agents/{agent['id']}/heartbeat", json={"current_load": 5})
    assert heartbeat.status_code == 200
    assert client.delete(f"/api/v1/agents/{agent['id']}").status_code == 204


def test_viewer_may_only_read(as_role, admin, fleet):
    viewer = as_role("viewer", sub="carol")
    a = fleet["A"]
    for path in (
        "/api/v1/sessions",
        f"/api/v1/sessions/{a['session']}",
        "/api/v1/agents",
        f"/api/v1/agents/{a['id']}",
        f"/api/v1/agents/{a['id']}/tasks",
        "/api/v1/tasks",
        f"/api/v1/tasks/{a['task']}",
    ):
        assert viewer.get(path).status_code == 200, path
    writes = [
        ("POST", "/api/v1/sessions", {"title": "x"}),
        ("POST", f"/api/v1/sessions/{a['session']}/pause", None),
        (
            "POST",
            "/api/v1/agents/register",
            {"name": "v", "type": "QA", "capabilities": ["TESTING"]},
        ),
        ("POST", f"/api/v1/agents/{a['id']}/heartbeat", {"current_load": 1}),
        ("DELETE", f"/api/v1/agents/{a['id']}", None),
        ("POST", "/api/v1/tasks", {"session_id": a["session"], "title": "x"}),
        ("POST", f"/api/v1/tasks/{a['task']}/cancel", None),
        ("POST", f"/api/v1/tasks/{a['task']}/start", None),
    ]
    for method, path, body in writes:
        assert_error(viewer.open(path, method=method, json=body), 403, "FORBIDDEN")
    assert admin.get(f"/api/v1/tasks/{a['task']}").json["status"] == "ASSIGNED"


def test_an_agent_token_without_agent_id_may_only_register(prod_app, as_role, fleet):
    registrar = as_role("agent", sub="fleet-registrar")
    a = fleet["A"]
    for method, path in [
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/agents"),
        ("GET", f"/api/v1/agents/{a['id']}"),
        ("POST", f"/api/v1/agents/{a['id']}/heartbeat"),
        ("GET", "/api/v1/tasks"),
        ("GET", f"/api/v1/tasks/{a['task']}"),
        ("POST", f"/api/v1/tasks/{a['task']}/start"),
        ("POST", "/api/v1/tasks"),
    ]:
        response = registrar.open(path, method=method, json={"current_load": 1})
        assert_error(response, 403, "FORBIDDEN")

    new = register_agent(registrar, "self-registered")
    verified = tokens.verify(new["token"], key=KEY)
    assert verified.role == "agent" and str(verified.agent_id) == new["id"]
    # an agent's identity is its own, never its name (which may be a person's sub)
    assert verified.sub == f"agent:{new['id']}"
    itself = agent_client(prod_app, new)
    beat = itself.post(f"/api/v1/agents/{new['id']}/heartbeat", json={"current_load": 7})
    assert beat.status_code == 200 and beat.json["current_load"] == 7
    assert_error(itself.post("/api/v1/agents/register", json={}), 403, "FORBIDDEN")


def test_every_registration_answer_carries_the_agents_token(client):
    response = client.post(
        "/api/v1/agents/register",
        json={"name": "dev-agent", "type": "QA", "capabilities": ["TESTING"]},
    )
    verified = tokens.verify(response.json["token"], key=DEV_KEY)
    assert str(verified.agent_id) == response.json["id"]
    assert verified.exp - verified.iat == tokens.AGENT_TTL_SECONDS
    assert verified.sub == f"agent:{response.json['id']}"


# --- broken object-level authorisation: agent B on agent A's things, route by route ------


def test_an_agent_acts_on_itself_and_its_tasks(prod_app, fleet, admin):
    a = fleet["A"]
    client = agent_client(prod_app, a)
    assert client.get(f"/api/v1/agents/{a['id']}").json["id"] == a["id"]
    held = client.get(f"/api/v1/agents/{a['id']}/tasks").json["items"]
    assert [t["id"] for t in held] == [a["task"]]
    listed = client.get(f"/api/v1/tasks?agent_id={a['id']}").json["items"]
    assert [t["id"] for t in listed] == [a["task"]]
    assert client.get(f"/api/v1/tasks/{a['task']}").status_code == 200
    beat = client.post(f"/api/v1/agents/{a['id']}/heartbeat", json={"current_load": 30})
    assert beat.status_code == 200
    assert act(client, a["task"], "start").json["status"] == "IN_PROGRESS"
    assert act(client, a["task"], "progress", {"progress": 50}).json["progress"] == 50
    # naming itself in the body is fine
    done = act(client, a["task"], "complete", {"result": {"ok": True}, "agent_id": a["id"]})
    assert done.json["status"] == "COMPLETED"
    assert client.delete(f"/api/v1/agents/{a['id']}").status_code == 204


def test_an_agent_fails_its_own_task(prod_app, fleet):
    a = fleet["A"]
    response = act(agent_client(prod_app, a), a["task"], "fail", {"error": "no disk"})
    assert response.status_code == 200 and response.json["status"] == "PENDING"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/agents/{A}", None),
        ("DELETE", "/api/v1/agents/{A}", None),
        ("POST", "/api/v1/agents/{A}/heartbeat", {"current_load": 99}),
        ("GET", "/api/v1/agents/{A}/tasks", None),
        ("GET", "/api/v1/tasks/{TA}", None),
        ("POST", "/api/v1/tasks/{TA}/start", None),
        ("POST", "/api/v1/tasks/{TA}/complete", {"result": {}}),
        ("POST", "/api/v1/tasks/{TA}/fail", {"error": "sabotage", "retryable": False}),
        ("POST", "/api/v1/tasks/{TA}/progress", {"progress": 10}),
        ("GET", "/api/v1/tasks?agent_id={A}", None),
        ("GET", "/api/v1/tasks", None),
        ("GET", "/api/v1/agents", None),
        ("GET", "/api/v1/sessions", None),
        ("POST", "/api/v1/sessions/{S}/cancel", None),
        ("POST", "/api/v1/tasks", {"session_id": "{S}", "title": "x"}),
        # an agent doesn't cancel, assign or decompose, not even its own task
        ("POST", "/api/v1/tasks/{TB}/cancel", None),
        ("POST", "/api/v1/tasks/{TB}/assign", {"agent_id": "{B}"}),
        ("POST", "/api/v1/tasks/{TB}/decompose", {"template": "CRUD"}),
        # B may not claim to be A, even on its own task
        ("POST", "/api/v1/tasks/{TB}/start", {"agent_id": "{A}"}),
        ("POST", "/api/v1/tasks/{TB}/fail", {"error": "x", "agent_id": "{A}"}),
    ],
)
def test_agent_b_is_refused_on_agent_a(prod_app, fleet, admin, method, path, body):
    a, b = fleet["A"], fleet["B"]
    names = {"A": a["id"], "TA": a["task"], "B": b["id"], "TB": b["task"], "S": a["session"]}

    def fill(value):
        return value.format(**names) if isinstance(value, str) else value

    before = admin.get(f"/api/v1/agents/{a['id']}").json
    json = {k: fill(v) for k, v in body.items()} if body else None
    response = agent_client(prod_app, b).open(fill(path), method=method, json=json)
    assert_error(response, 403, "FORBIDDEN")
    assert admin.get(f"/api/v1/agents/{a['id']}").json == before
    for name in ("A", "B"):
        assert admin.get(f"/api/v1/tasks/{fleet[name]['task']}").json["status"] == "ASSIGNED"
    assert admin.get(f"/api/v1/sessions/{a['session']}").json["status"] == "RUNNING"


def test_a_refusal_does_not_say_whether_the_other_task_is_startable(prod_app, fleet, admin):
    a, b = fleet["A"], fleet["B"]
    assert act(agent_client(prod_app, a), a["task"], "start").status_code == 200
    # IN_PROGRESS now: B still gets 403, not 400 INVALID_TRANSITION
    assert_error(act(agent_client(prod_app, b), a["task"], "start"), 403, "FORBIDDEN")


def test_an_unknown_or_malformed_task_is_not_a_403(prod_app, fleet):
    client = agent_client(prod_app, fleet["A"])
    assert_error(client.get(f"/api/v1/tasks/{uuid.uuid4()}"), 404, "TASK_NOT_FOUND")
    assert_error(client.get("/api/v1/tasks/not-a-uuid"), 400, "VALIDATION_ERROR")


def test_a_deregistered_agents_token_acts_on_nothing(prod_app, fleet, admin):
    a = fleet["A"]
    assert admin.delete(f"/api/v1/agents/{a['id']}").status_code == 204
    client = agent_client(prod_app, a)
    # the identity no longer exists: 401, whatever the route
    response = client.post(f"/api/v1/agents/{a['id']}/heartbeat", json={"current_load": 1})
    assert_error(response, 401, "UNAUTHORIZED")
    assert_error(act(client, a["task"], "start"), 401, "UNAUTHORIZED")
    assert admin.get(f"/api/v1/tasks/{a['task']}").json["status"] == "PENDING"


# --- the table and the spec ---------------------------------------------------------------


def test_every_endpoint_the_role_table_names_exists(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    named = auth.AGENT_SELF_ENDPOINTS | auth.AGENT_TASK_ENDPOINTS
    assert named | {auth.AGENT_TASK_LIST_ENDPOINT, auth.REGISTER_ENDPOINT} <= endpoints


def test_openapi_declares_the_bearer_scheme(client):
    spec = client.get("/openapi.json").json
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    open_routes = {"/health", "/ready", "/metrics"}  # no token: security [] (test_openapi)
    for path, operations in spec["paths"].items():
        if path in open_routes:
            continue
        assert path.startswith("/api/v1/")
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
            assert {"401", "403", "429"} <= set(operation["responses"])
