"""What a newcomer mistypes gets a clear 400 naming the problem: blank titles, unknown
query parameters (a typo must not silently list everything), enum fields with a wrong
value or type list the allowed values."""

import pytest

from tests.api.helpers import assert_error, make_session


@pytest.mark.parametrize("title", ["", " ", "   \t\n "])
def test_a_blank_title_is_refused(client, title):
    error = assert_error(
        client.post("/api/v1/sessions", json={"title": title}), 400, "VALIDATION_ERROR"
    )
    assert "title" in error["details"]
    session = make_session(client)
    body = {"session_id": session["id"], "title": title}
    error = assert_error(client.post("/api/v1/tasks", json=body), 400, "VALIDATION_ERROR")
    assert "title" in error["details"]
    assert client.get("/api/v1/tasks").json["total"] == 0


@pytest.mark.parametrize(
    "path, typo",
    [
        ("/api/v1/sessions?stauts=RUNNING", "stauts"),
        ("/api/v1/tasks?session=x", "session"),
        ("/api/v1/agents?available=true", "available"),
        ("/api/v1/sessions?page=1&pagesize=5", "pagesize"),
    ],
)
def test_an_unknown_query_parameter_is_refused_by_name(client, path, typo):
    make_session(client)
    error = assert_error(client.get(path), 400, "VALIDATION_ERROR")
    assert typo in error["details"], error


@pytest.mark.parametrize("value", ["urgent", 5, ["HIGH"], None, True])
def test_an_enum_field_lists_its_allowed_values(client, value):
    answer = client.post("/api/v1/sessions", json={"title": "t", "priority": value})
    error = assert_error(answer, 400, "VALIDATION_ERROR")
    assert error["details"]["priority"] == ["Must be one of: CRITICAL, HIGH, MEDIUM, LOW."]


def test_an_enum_in_a_query_lists_its_allowed_values(client):
    error = assert_error(client.get("/api/v1/agents?type=WIZARD"), 400, "VALIDATION_ERROR")
    assert "BACKEND" in error["details"]["type"][0]
