"""One database session per request, committed once after the view succeeds."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from orchestrator_api.errors import error_response, handle_database_error

log = logging.getLogger(__name__)


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def db() -> Session:
    if "db" not in g:
        session = current_app.extensions["orchestrator"].database.session()
        if request.method in READ_METHODS:
            # A read runs each statement on its own (autocommit): no BEGIN, and its commit
            # or rollback costs no round trip. Reads never write (writes are POST/DELETE).
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        g.db = session
    return g.db


def in_transaction() -> bool:
    """Whether this request has opened its database session (and so its transaction)."""
    return "db" in g


def before_commit(hook: Callable[[Response], None]) -> None:
    """Run `hook(response)` in this request's transaction just before it commits."""
    g.setdefault("before_commit", []).append(hook)


def _commit_or_roll_back(response: Response) -> Response:
    session: Session | None = g.get("db")
    if session is None:
        return response
    try:
        if response.status_code < 400:
            for hook in g.pop("before_commit", []):
                hook(response)
            session.commit()
        else:
            session.rollback()
    except IntegrityError:
        session.rollback()
        log.warning("commit refused by a constraint", exc_info=True)
        response = error_response(409, "CONFLICT", "The change conflicts with existing data")
    except DBAPIError as exc:
        session.rollback()
        response = handle_database_error(exc)
    finally:
        g.pop("db", None)
        session.close()
    return response


def _close(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db", None)
    if session is not None:
        session.rollback()
        session.close()


def register(app: Flask) -> None:
    app.after_request(_commit_or_roll_back)
    app.teardown_request(_close)
