from orchestrator_api.app import create_app


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok" and response.json["version"]


def test_ready_checks_postgres_and_redis(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok"}


def test_ready_fails_naming_redis(settings):
    app = create_app(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "ok", "redis": "unavailable"}
    assert response.json["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "redis" in response.json["error"]["message"]


def test_ready_fails_naming_postgres(settings):
    app = create_app(
        settings.with_overrides(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    )
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "unavailable", "redis": "ok"}
    assert "database" in response.json["error"]["message"]
