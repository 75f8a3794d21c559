"""One database session per request, committed once after the view succeeds; a request
that lost its connection runs once more on a fresh one where that is safe."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from orchestrator_api.errors import error_response, handle_database_error
from shared.db import transaction_begun_when_lost

log = logging.getLogger(__name__)


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RUN_AGAIN_FROM = "orchestrator_run_again_from"  # app.extensions: see run_again_from_here


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


def run_again_from_here(app: Flask) -> None:
    """Call in create_app after the hooks that admit a request once (the request log, CORS
    preflights, the rate limiter): a request run again (`_run_again_or_answer`) runs the
    before_request hooks registered after this call (authentication, body checks, the
    Idempotency-Key), then its view. It is counted and logged once."""
    app.extensions[RUN_AGAIN_FROM] = len(app.before_request_funcs.get(None, []))


def _may_run_again(exc: DBAPIError) -> bool:
    """Safe to run again on a fresh connection, once: a read whose connection was lost
    (it runs in autocommit and writes nothing, so running it again changes nothing), or a
    write whose connection was lost before its transaction began on the server (nothing of
    it ran). A write lost later is not: its statements may have run, and a COMMIT lost on
    the way may have committed. Nor is a WebSocket, whose socket is in use."""
    begun = transaction_begun_when_lost(exc)
    rule = request.url_rule
    if begun is None or rule is None or rule.websocket or g.get("ran_again"):
        return False
    if RUN_AGAIN_FROM not in current_app.extensions:
        return False
    return request.method in READ_METHODS or not begun


def _hooks_run_again(app: Flask) -> list[Callable]:
    app_hooks = app.before_request_funcs.get(None, [])[app.extensions[RUN_AGAIN_FROM] :]
    blueprints = reversed(request.blueprints)  # in the order preprocess_request runs them
    return [*app_hooks, *(h for b in blueprints for h in app.before_request_funcs.get(b, []))]


def _run_again_or_answer(exc: DBAPIError) -> ResponseReturnValue:
    """The error handler of DBAPIError (raised by a before_request hook or the view): runs
    the request once more where that is safe, else answers the error. Costs nothing
    unless a statement failed."""
    if not _may_run_again(exc):
        return handle_database_error(exc)
    g.ran_again = True
    log.warning("database connection lost; running the request again: %s", exc.orig)
    _close(None)  # the lost connection's session; db() opens a fresh one
    g.pop("before_commit", None)  # the hooks that registered them run again
    app = current_app._get_current_object()
    try:
        for hook in _hooks_run_again(app):
            answer = app.ensure_sync(hook)()
            if answer is not None:
                return answer
        return app.dispatch_request()
    except Exception as again:  # answered as the first attempt's would be
        return app.handle_user_exception(again)


def register(app: Flask) -> None:
    app.register_error_handler(DBAPIError, _run_again_or_answer)
    app.after_request(_commit_or_roll_back)
    app.teardown_request(_close)
