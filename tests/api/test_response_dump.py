"""The compiled response dump (orchestrator_api/schemas/response.py) writes exactly what
marshmallow's own dump writes, for every response schema of the API, over generated
values: None, missing keys, enum members, aware datetimes, nested lists and objects."""

from __future__ import annotations

import datetime as dt
import enum
import importlib
import pkgutil
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields

import orchestrator_api.schemas as schemas_package
from orchestrator_api.schemas.response import ResponseSchema
from shared import enums

for _module in pkgutil.iter_modules(schemas_package.__path__):
    importlib.import_module(f"{schemas_package.__name__}.{_module.name}")


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


RESPONSE_SCHEMAS = sorted(set(_subclasses(ResponseSchema)), key=lambda c: c.__name__)
ENUM_MEMBERS = [
    m for e in vars(enums).values() if isinstance(e, type) and issubclass(e, enum.Enum) for m in e
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _value(field: fields.Field, depth: int = 0):
    if isinstance(field, fields.Nested):
        return _object(field.schema, depth + 1)
    if isinstance(field, fields.List):
        return st.lists(st.none() | _value(field.inner, depth), max_size=3)
    if isinstance(field, fields.DateTime):
        return st.datetimes(
            dt.datetime(2000, 1, 1),
            dt.datetime(2100, 1, 1),
            timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5))]),
        )
    if isinstance(field, fields.UUID):
        return st.uuids()
    if isinstance(field, fields.Boolean):
        return st.booleans()
    if isinstance(field, fields.Integer):
        return st.integers(-(2**40), 2**40)
    if isinstance(field, fields.Float):
        return st.floats(allow_nan=False) | st.integers(-1000, 1000)
    if isinstance(field, fields.Dict):
        values = JSON if field.value_field is None else _value(field.value_field, depth)
        return st.dictionaries(st.text(max_size=4), values, max_size=3)
    if isinstance(field, fields.String):
        return st.text(max_size=8) | st.sampled_from(ENUM_MEMBERS)
    raise AssertionError(f"no values for {type(field).__name__}: add them here")


def _object(schema: Schema, depth: int = 0):
    items = {
        (field.attribute or name): st.none() | _value(field, depth)
        for name, field in schema.dump_fields.items()
        if depth < 3 or not isinstance(field, fields.Nested | fields.List)
    }
    whole = st.fixed_dictionaries(items) if items else st.just({})
    # a key named like a dict method ("items") is never left out: marshmallow would read
    # the method
    optional = sorted(k for k in items if not hasattr(dict, k)) or [""]
    return st.tuples(whole, st.sets(st.sampled_from(optional))).map(
        lambda pair: {k: v for k, v in pair[0].items() if k not in pair[1]}
    )


@pytest.mark.parametrize("schema_class", RESPONSE_SCHEMAS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("as_object", [False, True], ids=["dict", "object"])
def test_the_compiled_dump_writes_what_marshmallow_writes(schema_class, as_object, monkeypatch):
    schema = schema_class()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_object(schema))
    def check(data):
        obj = types.SimpleNamespace(**data) if as_object else data
        with monkeypatch.context() as patch:
            patch.setattr(ResponseSchema, "dump", Schema.dump)
            expected = schema_class().dump(obj)
        assert schema.dump(obj) == expected
        assert schema.dump([obj, obj], many=True) == [expected, expected]

    check()


def test_every_response_of_the_api_uses_the_compiled_dump():
    """The schemas the routes answer with (and those they nest) dump through the plan."""
    from orchestrator_api.app import create_app
    from shared.config import Settings

    app = create_app(Settings())
    answered = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        for method in rule.methods or ():
            doc = getattr(
                getattr(getattr(view, "view_class", None), method.lower(), None), "_apidoc", None
            )
            doc = doc or getattr(view, "_apidoc", None) or {}
            for responses in doc.get("response", {}).get("responses", {}).values():
                for response in responses:
                    if response.get("schema") is not None:
                        answered.add(type(response["schema"]))
    assert answered, "no response schema found"
    assert not [s.__name__ for s in answered if not issubclass(s, ResponseSchema)]
    assert {s for s in answered} <= set(RESPONSE_SCHEMAS)
