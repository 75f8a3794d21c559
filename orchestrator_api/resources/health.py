"""Liveness and readiness (CONTRACT section 10)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, send_from_directory
from sqlalchemy import text
from swagger_ui_bundle import swagger_ui_path

from orchestrator_api.errors import error_response
from shared import __version__

blp = Blueprint("health", __name__)


@blp.get("/health")
def health():
    return jsonify({"status": "ok", "version": __version__, "checks": {"process": "ok"}})


@blp.get("/ready")
def ready():
    ext = current_app.extensions["orchestrator"]
    checks = {}
    try:
        with ext.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        current_app.logger.warning("readiness: database failed: %s", exc.__class__.__name__)
        checks["database"] = "unavailable"
    try:
        ext.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        current_app.logger.warning("readiness: redis failed: %s", exc.__class__.__name__)
        checks["redis"] = "unavailable"
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return jsonify({"status": "ok", "version": __version__, "checks": checks})
    return error_response(
        503,
        "SERVICE_UNAVAILABLE",
        f"Not ready: {', '.join(failed)} unavailable",
        beside={"status": "unavailable", "checks": checks},
    )


@blp.get("/docs/assets/<path:filename>")
def docs_assets(filename):
    """Swagger UI's files, served from the swagger-ui-bundle package: /docs works offline."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
