"""Request bodies are checked before any view runs (docs/API.md, "Request limits"): at most
1 MiB, with or without a Content-Length; JSON only, in UTF-8; arrays and objects nested
at most MAX_JSON_DEPTH deep (counted on the raw bytes, before parsing: a deep body would
exhaust the recursion limit of whatever walks it); no text PostgreSQL cannot store (NUL,
lone surrogates)."""

from __future__ import annotations

import re
from itertools import accumulate

from flask import Response, request

from orchestrator_api import errors

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
BODY_METHODS = {"POST", "PUT", "PATCH"}

# A JSON string: the quotes and everything between them, escapes included. Scanned from
# the left, it finds exactly the strings of a valid JSON text (outside strings there is
# no quote or backslash); an invalid text fails to parse anyway.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = [0] * 256  # byte -> how it moves the depth
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_SURROGATE = re.compile("[\ud800-\udfff]")  # json pairs valid ones into one character


def json_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, without parsing it: the
    running count of brackets outside strings, at its highest (a scalar is 0)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_body() -> Response | None:
    """A `before_request` hook: refuses a body that breaks a rule above (400 or 413)."""
    errors.request_id()
    if request.method not in BODY_METHODS:
        return None
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return _too_large()
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not length and not chunked:
        return None
    if not request.is_json:
        return _invalid("The body must be JSON (Content-Type: application/json)")
    data = request.get_data(cache=True)  # at most MAX_BODY_BYTES: MAX_CONTENT_LENGTH
    if length is None and len(data) >= MAX_BODY_BYTES and _more_to_read():
        return _too_large()  # chunked, without a length: the stream was cut at the limit
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return _invalid("The body is not valid JSON: it must be UTF-8")
    if json_depth(data) > MAX_JSON_DEPTH:
        message = f"The body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
        return _invalid(message, {"_body": [message]})
    body = request.get_json(silent=True)
    if body is None:
        return _invalid("The body is not valid JSON")
    details = bad_text(body)
    if details:  # PostgreSQL stores neither in text or jsonb: refused here, not a 500 later
        return _invalid("Invalid input", details)
    return None


def bad_text(value, path: str = "") -> dict[str, list[str]]:
    """Where the JSON value holds text PostgreSQL cannot store (in a string or a key), as
    dotted paths -> messages. The depth check bounds the recursion."""
    if isinstance(value, str):
        problems = _text_problems(value)
        return {path or "_body": problems} if problems else {}
    found: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            problems = _text_problems(key)
            if problems:  # a surrogate is shown escaped: the answer's JSON must encode
                found[where.encode("utf-8", "backslashreplace").decode()] = problems
            else:
                found.update(bad_text(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(bad_text(item, f"{path}.{index}" if path else str(index)))
    return found


def _text_problems(text: str) -> list[str]:
    problems = []
    if "\x00" in text:
        problems.append("Must not contain NUL characters (\\u0000).")
    if _SURROGATE.search(text):
        problems.append("Must not contain lone surrogates (\\ud800-\\udfff).")
    return problems


def _more_to_read() -> bool:
    """Whether the client sent more than the limit (request.stream stops at it)."""
    return bool(request.environ["wsgi.input"].read(1))


def _too_large() -> Response:
    return errors.error_response(413, "PAYLOAD_TOO_LARGE", errors.MESSAGES[413])


def _invalid(message: str, details: dict | None = None) -> Response:
    return errors.error_response(400, "VALIDATION_ERROR", message, details)
