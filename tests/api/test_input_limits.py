"""Bad input that used to reach a 500 or a wrong answer (issue 12): deep JSON, lone
surrogates, non-ASCII digits in query integers, the methods OPTIONS advertises, and the
reason an `assign` to a named agent gives. The limits that gunicorn enforces (request
line, headers, chunked bodies) are in tests/test_gunicorn_errors.py."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import update

from orchestrator_api.request_body import MAX_JSON_DEPTH, json_depth
from shared.models import Agent
from tests.api.helpers import act, assert_error, make_task, register, start_session


def nested(depth: int, leaf="x") -> str:
    """A JSON value `depth` arrays and objects deep, alternating."""
    text = json.dumps(leaf)
    for level in range(depth):
        text = f'{{"k": {text}}}' if level % 2 else f"[{text}]"
    return text


def post_raw(client, path: str, text: str | bytes):
    return client.post(path, data=text, content_type="application/json")


def sessions_total(client) -> int:
    return client.get("/api/v1/sessions").json["total"]


@pytest.fixture
def running_task(client):
    session = start_session(client)
    agent = register(client)
    task = make_task(client, session["id"])
    assert act(client, task["id"], "assign", {"agent_id": agent["id"]}).status_code == 200
    assert act(client, task["id"], "start").status_code == 200
    return task


# -- JSON nesting ----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 500, 1000, 100_000])
def test_deep_json_in_an_unknown_field_is_refused(client, depth):
    """500 levels in an unknown field was a RecursionError (500); 100,000 levels one in
    the JSON decoder itself. Refused on the raw bytes, before any parsing."""
    response = post_raw(client, "/api/v1/sessions", f'{{"title": "x", "extra": {nested(depth)}}}')
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert str(MAX_JSON_DEPTH) in error["message"]
    assert error["details"] == {"_body": [error["message"]]}
    assert sessions_total(client) == 0


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 1000])
def test_deep_result_is_refused(client, running_task, depth):
    """`{"result": ...}` adds one level: `depth` inside it is over the limit."""
    response = post_raw(
        client, f"/api/v1/tasks/{running_task['id']}/complete", f'{{"result": {nested(depth)}}}'
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert client.get(f"/api/v1/tasks/{running_task['id']}").json["status"] == "IN_PROGRESS"


def test_a_result_at_the_depth_limit_is_accepted(client, running_task):
    result = nested(MAX_JSON_DEPTH - 2)  # inside {"result": {"r": ...}}
    body = f'{{"result": {{"r": {result}}}}}'
    assert json_depth(body.encode()) == MAX_JSON_DEPTH
    response = post_raw(client, f"/api/v1/tasks/{running_task['id']}/complete", body)
    assert response.status_code == 200, response.json
    assert response.json["result"] == {"r": json.loads(result)}


def test_brackets_inside_strings_do_not_count(client):
    prompt = '[{"\\"[' * 1000 + "\\\\"
    body = json.dumps({"title": "x", "initial_prompt": prompt})
    response = post_raw(client, "/api/v1/sessions", body)
    assert response.status_code == 201, response.json
    assert response.json["initial_prompt"] == prompt


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}], "c": {}}', 4),
        ('["\\\\", ["\\"]"]]', 2),
        ("[[[]], [[[]]]]", 4),
        (nested(2000), 2000),
    ],
)
def test_json_depth(text, depth):
    assert json_depth(text.encode()) == depth


# -- Lone surrogates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"title": "\\ud800"}', "title"),
        ('{"title": "a\\udfffb"}', "title"),
        ('{"title": "\\ude00\\ud83d"}', "title"),  # a pair in the wrong order
        ('{"title": "x", "initial_prompt": "ok \\udbff"}', "initial_prompt"),
        ('{"title": "x", "extra": [1, {"k": "\\ud800"}]}', "extra.1.k"),
        ('{"title": "x", "\\ud800": 1}', "\\ud800"),
    ],
)
def test_lone_surrogates_are_refused(client, text, field):
    """`{"title": "\\ud800"}` was a UnicodeEncodeError (500): no UTF-8 can store it."""
    error = assert_error(post_raw(client, "/api/v1/sessions", text), 400, "VALIDATION_ERROR")
    assert field in error["details"], error
    assert sessions_total(client) == 0


def test_a_lone_surrogate_in_a_result_is_refused(client, running_task):
    path = f"/api/v1/tasks/{running_task['id']}/complete"
    error = assert_error(
        post_raw(client, path, '{"result": {"a": ["\\udc00"]}}'), 400, "VALIDATION_ERROR"
    )
    assert "result.a.0" in error["details"]


def test_encoded_surrogates_and_invalid_utf8_are_refused(client):
    for raw in (b'{"title": "\xed\xa0\x80"}', b'{"title": "\xff"}'):
        error = assert_error(post_raw(client, "/api/v1/sessions", raw), 400, "VALIDATION_ERROR")
        assert "UTF-8" in error["message"]
    assert sessions_total(client) == 0


def test_surrogate_pairs_are_text(client):
    response = post_raw(client, "/api/v1/sessions", '{"title": "ship it \\ud83d\\ude80"}')
    assert response.status_code == 201, response.json
    assert response.json["title"] == "ship it \U0001f680"


# -- Query integers --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/agents", "/api/v1/tasks"])
@pytest.mark.parametrize("name", ["page", "page_size"])
@pytest.mark.parametrize(
    "value", ["١", "１", "²", "1_0", " 1", "1 ", "+1", "0x1", "1.0", "", "9" * 40]
)
def test_query_integers_are_ascii_digits(client, path, name, value):
    """`page=١` (ARABIC-INDIC DIGIT ONE) was page 1: int() reads any Unicode digit."""
    error = assert_error(client.get(path, query_string={name: value}), 400, "VALIDATION_ERROR")
    assert name in error["details"], error


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/agents", "/api/v1/tasks"])
def test_query_integers_in_ascii_digits(client, path):
    response = client.get(path, query_string={"page": "0002", "page_size": "7"})
    assert response.status_code == 200, response.json
    assert (response.json["page"], response.json["page_size"]) == (2, 7)
    error = assert_error(client.get(path, query_string={"page": "-1"}), 400, "VALIDATION_ERROR")
    assert "greater than or equal to 1" in error["details"]["page"][0]


# -- OPTIONS and the agents' routes ----------------------------------------------------


def allowed(response) -> set[str]:
    return {m.strip() for m in response.headers["Allow"].split(",")}


def test_options_advertises_only_the_methods_that_exist(client):
    """`/agents/register` matched `/agents/<agent_id>` too, so GET and DELETE were
    advertised for it."""
    response = client.options("/api/v1/agents/register")
    assert response.status_code == 200
    assert allowed(response) == {"POST", "OPTIONS"}
    response = client.options(f"/api/v1/agents/{uuid.uuid4()}")
    assert allowed(response) == {"GET", "HEAD", "DELETE", "OPTIONS"}
    response = assert_error(client.get("/api/v1/agents/register"), 405, "METHOD_NOT_ALLOWED")
    assert allowed(client.delete("/api/v1/agents/register")) == {"POST", "OPTIONS"}


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("raw", ["xyz", "registered", "register-1", "REGISTER"])
def test_malformed_agent_ids_are_still_400(client, method, raw):
    response = getattr(client, method)(f"/api/v1/agents/{raw}")
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"id": ["Not a valid UUID."]}
    assert_error(client.get(f"/api/v1/agents/{uuid.uuid4()}"), 404, "AGENT_NOT_FOUND")


def test_the_spec_still_lists_agent_ids_as_strings(client):
    paths = client.get("/openapi.json").json["paths"]
    (param,) = paths["/api/v1/agents/{agent_id}"]["parameters"]
    assert (param["name"], param["schema"]) == ("agent_id", {"type": "string", "minLength": 1})
    assert set(paths["/api/v1/agents/register"]) == {"post"}


# -- assign to a named agent: the real reason ------------------------------------------


def test_assign_to_an_agent_that_cannot_take_it_says_why(client, db):
    """The answer said the agent "is online ... and has room": the reverse of the truth."""
    session = start_session(client)
    path = "/api/v1/tasks/{}/assign"
    task = make_task(client, session["id"], required_capabilities=["TESTING", "SECURITY_AUDIT"])
    coder = register(client, name="coder", capabilities=["CODE_GENERATION", "TESTING"])
    error = assert_error(
        client.post(path.format(task["id"]), json={"agent_id": coder["id"]}),
        503,
        "AGENT_UNAVAILABLE",
    )
    assert error["message"] == f"Agent {coder['id']} lacks the capabilities SECURITY_AUDIT"

    small = register(client, name="small", max_concurrent_tasks=1)
    first = make_task(client, session["id"])
    assert act(client, first["id"], "assign", {"agent_id": small["id"]}).status_code == 200
    second = make_task(client, session["id"])
    error = assert_error(
        act(client, second["id"], "assign", {"agent_id": small["id"]}), 503, "AGENT_UNAVAILABLE"
    )
    assert error["message"] == f"Agent {small['id']} is BUSY: it holds 1 of its 1 tasks"

    loaded = register(client, name="loaded")
    client.post(f"/api/v1/agents/{loaded['id']}/heartbeat", json={"current_load": 100})
    error = assert_error(
        act(client, second["id"], "assign", {"agent_id": loaded["id"]}), 503, "AGENT_UNAVAILABLE"
    )
    assert error["message"] == f"Agent {loaded['id']} is BUSY: it reports a load of 100%"

    gone = register(client, name="gone")
    db.execute(update(Agent).where(Agent.id == uuid.UUID(gone["id"])).values(status="OFFLINE"))
    db.commit()
    error = assert_error(
        act(client, second["id"], "assign", {"agent_id": gone["id"]}), 503, "AGENT_UNAVAILABLE"
    )
    assert error["message"] == f"Agent {gone['id']} is OFFLINE"

    error = assert_error(act(client, task["id"], "assign"), 503, "AGENT_UNAVAILABLE")
    assert "No agent is online with the capabilities" in error["message"]
