"""The floor of bench/request_path.py: what Flask + SQLAlchemy + psycopg2 do with nothing
else, on the benchmark's database (DATABASE_URL) and a table of its own (`bare_items`).

`gunicorn bench.bare_app:app -k gthread`, with the project's worker and thread counts.
No auth, no limiter, no logging, no events: a route, a statement, a commit, a JSON answer.
"""

from __future__ import annotations

import os
import uuid

from flask import Flask, jsonify, request
from sqlalchemy import create_engine, text

TABLE = "bare_items"
CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        id uuid PRIMARY KEY,
        title text NOT NULL,
        status text NOT NULL DEFAULT 'PENDING',
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS ix_{TABLE}_created_at ON {TABLE} (created_at DESC, id DESC);
"""
COLUMNS = "id, title, status, created_at"

app = Flask(__name__)
engine = create_engine(
    os.environ.get("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1/postgres"),
    pool_size=10,
    max_overflow=20,
)


def _row(row) -> dict:
    return {"id": row.id, "title": row.title, "status": row.status, "created_at": row.created_at}


@app.get("/hello")
def hello():
    return jsonify(status="ok")


@app.get("/items/<uuid:item_id>")
def get_item(item_id):
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT {COLUMNS} FROM {TABLE} WHERE id = :id"), {"id": item_id}
        ).first()
    if row is None:
        return jsonify(error="not found"), 404
    return jsonify(_row(row))


@app.get("/items")
def list_items():
    limit = min(int(request.args.get("limit", 20)), 100)
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY created_at DESC, id DESC LIMIT :n"),
            {"n": limit},
        ).all()
    return jsonify(items=[_row(row) for row in rows])


@app.post("/items")
def create_item():
    body = request.get_json()
    with engine.begin() as connection:
        row = connection.execute(
            text(f"INSERT INTO {TABLE} (id, title) VALUES (:id, :title) RETURNING {COLUMNS}"),
            {"id": uuid.uuid4(), "title": str(body["title"])},
        ).first()
    return jsonify(_row(row)), 201
