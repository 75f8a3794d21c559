import pytest

from orchestrator_api.app import create_app
from tests.api.helpers import assert_error


def test_unknown_route(client):
    assert_error(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")


def test_wrong_method(client):
    response = client.put("/api/v1/sessions", json={})
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["Allow"]


def test_malformed_json(client):
    response = client.post(
        "/api/v1/sessions", data='{"title": "x"', content_type="application/json"
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert client.get("/api/v1/sessions").json["total"] == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type(client, content_type):
    response = client.post("/api/v1/sessions", data='{"title": "x"}', content_type=content_type)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert "JSON" in error["message"]
    assert client.get("/api/v1/sessions").json["total"] == 0


def test_body_over_one_mebibyte(client):
    response = client.post(
        "/api/v1/sessions",
        data='{"title": "' + "x" * (1024 * 1024) + '"}',
        content_type="application/json",
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/sessions", {"title": "a\x00b"}, "title"),
        ("/api/v1/sessions", {"title": "x", "initial_prompt": "\x00"}, "initial_prompt"),
        ("/api/v1/agents/register", {"name": "n", "capabilities": ["\x00"]}, "capabilities.0"),
        ("/api/v1/sessions", {"title": "x", "k\x00": 1}, "k\x00"),
    ],
)
def test_nul_characters_are_refused(client, path, body, field):
    """PostgreSQL stores no NUL in text or jsonb: a 400, not a 500 (found by the fuzz suite)."""
    error = assert_error(client.post(path, json=body), 400, "VALIDATION_ERROR")
    assert field in error["details"]
    assert client.get("/api/v1/sessions").json["total"] == 0


def test_request_id_is_echoed_when_sane(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123.def"})
    assert response.headers["X-Request-ID"] == "abc-123.def"
    response = client.get("/api/v1/nothing", headers={"X-Request-ID": "abc-123"})
    assert response.json["error"]["request_id"] == "abc-123"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "<script>", ""])
def test_insane_request_id_is_replaced(client, bad):
    response = client.get("/health", headers={"X-Request-ID": bad})
    assert response.headers["X-Request-ID"] != bad
    assert len(response.headers["X-Request-ID"]) == 32


def test_unhandled_exception_is_opaque_and_logged(settings, caplog):
    app = create_app(settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("SELECT secret FROM passwords")

    response = app.test_client().get("/boom")
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert "SELECT secret FROM passwords" in caplog.text
    assert error["request_id"] in caplog.text


def test_a_constraint_refusing_a_flush_is_409_like_at_commit(settings, database):
    """An IntegrityError raised inside a view (at a flush) answers as one at the commit."""
    import uuid

    from orchestrator_api.database import db
    from shared.models import WorkSession

    app = create_app(settings)
    taken = uuid.uuid4()

    @app.post("/twice")
    def twice():
        for _ in range(2):
            db().add(WorkSession(id=taken, title="twice", pool="default"))
            db().flush()
        return {}

    response = app.test_client().post("/twice")
    assert_error(response, 409, "CONFLICT")
    with database.engine.connect() as connection:  # nothing was kept
        assert (
            connection.exec_driver_sql(
                f"SELECT count(*) FROM sessions WHERE id = '{taken}'"
            ).scalar()
            == 0
        )


def test_openapi_spec_and_docs(client):
    spec = client.get("/openapi.json").json
    paths = spec["paths"]
    assert "/api/v1/sessions" in paths
    assert "/api/v1/sessions/{session_id}/start" in paths
    assert set(paths["/api/v1/sessions"]) >= {"get", "post"}
    # the error answers are listed, validation as the 400 it is (no 422, no catch-all)
    responses = paths["/api/v1/sessions"]["post"]["responses"]
    assert {"400", "404", "409", "413", "500", "503"} <= set(responses)
    assert "422" not in responses and "default" not in responses
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.get_data(as_text=True)
    # served from the package, not a CDN: the page works offline
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
