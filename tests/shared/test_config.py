import subprocess
import sys

import pytest

from shared.config import ConfigError, Settings


def test_defaults_match_the_contract():
    settings = Settings.from_env({})
    assert settings.database_url == "postgresql://localhost/orchestrator"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.log_level == "INFO"
    assert settings.orchestrator_env == "development"
    assert settings.rate_limit == "1200/minute"  # development: a lone developer's budget
    assert settings.ws_max_connections_per_client == 5
    assert settings.heartbeat_timeout_seconds == 30
    assert settings.task_max_attempts == 3
    assert settings.task_timeout_seconds == 3600
    assert settings.task_start_timeout_seconds == 120
    assert settings.system_event_interval_seconds == 5
    assert settings.event_retention == 10000
    assert settings.port == 8000
    assert settings.api_secret_key is None


def test_sixty_a_minute_is_the_production_default():
    production = Settings.from_env({"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": "k" * 32})
    assert production.rate_limit == "60/minute"
    assert Settings().rate_limit == "60/minute"
    chosen = Settings.from_env({"RATE_LIMIT": "60/minute"})
    assert chosen.rate_limit == "60/minute"  # set explicitly, development keeps it


def test_every_variable_is_read():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://u@db/x",
            "REDIS_URL": "redis://r:6379/3",
            "LOG_LEVEL": "debug",
            "HEARTBEAT_TIMEOUT_SECONDS": "12",
            "TASK_MAX_ATTEMPTS": "5",
            "RATE_LIMIT": "10/second",
            "PORT": "9000",
            "FLOWER_URL": "https://ops.example.com/flower/",
        }
    )
    assert settings.sqlalchemy_url == "postgresql+psycopg2://u@db/x"
    assert settings.redis_url == "redis://r:6379/3"
    assert settings.log_level == "DEBUG"
    assert settings.heartbeat_timeout_seconds == 12
    assert settings.task_max_attempts == 5
    assert settings.rate_limit == "10/second"
    assert settings.port == 9000
    assert settings.flower_url == "https://ops.example.com/flower/"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEARTBEAT_TIMEOUT_SECONDS", "abc"),
        ("TASK_MAX_ATTEMPTS", "0"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("ORCHESTRATOR_ENV", "staging"),
        ("RATE_LIMIT", "lots"),
        ("DATABASE_URL", "mysql://x/y"),
        ("EVENT_RETENTION", "1.5"),
        ("FLOWER_URL", "javascript:alert(1)"),
    ],
)
def test_invalid_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({name: value})
    assert str(excinfo.value).startswith(name)


def test_production_needs_a_strong_key():
    with pytest.raises(ConfigError, match="API_SECRET_KEY"):
        Settings.from_env({"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": "short"})
    settings = Settings.from_env({"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": "k" * 32})
    assert settings.is_production


def test_a_bad_variable_stops_the_process_with_one_line():
    result = subprocess.run(
        [sys.executable, "-c", "import orchestrator_api.wsgi"],
        env={"HEARTBEAT_TIMEOUT_SECONDS": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "HEARTBEAT_TIMEOUT_SECONDS" in lines[0]


def test_production_refuses_the_public_development_key():
    from shared.config import DEVELOPMENT_SECRET_KEY

    with pytest.raises(ConfigError, match="public development key"):
        Settings.from_env(
            {"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": DEVELOPMENT_SECRET_KEY}
        )
