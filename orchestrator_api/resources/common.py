from __future__ import annotations

import uuid

import flask_smorest
from webargs.flaskparser import FlaskParser

from shared.errors import ValidationError


class ArgumentsParser(FlaskParser):
    # Invalid arguments are answered 400 VALIDATION_ERROR (errors.py), and the spec says so.
    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ArgumentsParser()


def parse_id(raw: str, name: str = "id") -> uuid.UUID:
    """Path ids are parsed here, not by the router, so a bad one is a 400, not a 404."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError("Invalid input", details={name: ["Not a valid UUID."]}) from None
