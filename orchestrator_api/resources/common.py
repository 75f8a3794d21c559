from __future__ import annotations

import uuid

from shared.errors import ValidationError


def parse_id(raw: str, name: str = "id") -> uuid.UUID:
    """Path ids are parsed here, not by the router, so a bad one is a 400, not a 404."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError("Invalid input", details={name: ["Not a valid UUID."]}) from None
