from __future__ import annotations

import re
import uuid

import flask_smorest
from webargs.flaskparser import FlaskParser
from werkzeug.routing import UnicodeConverter

from shared.errors import ValidationError


class ArgumentsParser(FlaskParser):
    # Invalid arguments are answered 400 VALIDATION_ERROR (errors.py), and the spec says so.
    DEFAULT_VALIDATION_STATUS = 400
    # Query strings follow their schema's Meta.unknown (RAISE: schemas/common.QuerySchema)
    # instead of webargs' default for the location (EXCLUDE), so a typo is refused.
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None}


class IdConverter(UnicodeConverter):
    """`<id(register):agent_id>`: a path id, any one segment but the static routes named
    beside it, so that `/agents/register` is not also `/agents/<agent_id>` (OPTIONS would
    advertise its GET and DELETE). A string, parsed in the view (`parse_id`), and in the
    spec, like the default converter's."""

    def __init__(self, map, *siblings: str) -> None:
        super().__init__(map)  # one segment of at least one character: [^/]{1,}
        if siblings:
            names = "|".join(re.escape(name) for name in siblings)
            self.regex = rf"(?!(?:{names})\Z){self.regex}"


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ArgumentsParser()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record_once(lambda state: state.app.url_map.converters.setdefault("id", IdConverter))


def parse_id(raw: str, name: str = "id") -> uuid.UUID:
    """Path ids are parsed here, not by the router, so a bad one is a 400, not a 404."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError("Invalid input", details={name: ["Not a valid UUID."]}) from None
