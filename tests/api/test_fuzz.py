"""Fuzzing every operation of `/openapi.json` with schemathesis (issue 7).

A real gunicorn `web` (the Procfile's, development mode: no token) answers generated
requests, valid and invalid; every answer must be no 500 and match the spec: its status
code is declared, its content type and headers too, its body fits the declared schema,
invalid input is refused (schemathesis' checks, all but two: see EXCLUDED_CHECKS).
Derandomized, so CI runs the same cases every time; bounded to about a minute.

Two kinds of input schemathesis rarely makes are generated here for every operation that
takes a body (issue 12): JSON nested deeper than the limit (a RecursionError, 500, before
the limit) and lone surrogates (a UnicodeEncodeError, 500): each must be a 400.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as CHECK_REGISTRY
from schemathesis.checks import load_all_checks

from orchestrator_api.request_body import BODY_METHODS, MAX_JSON_DEPTH
from tests.support.live_server import live_server_fixture

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

# Per operation: cases of valid input, then of invalid input (24 operations: ~1,250).
PLAN = ((GenerationMode.POSITIVE, 35), (GenerationMode.NEGATIVE, 25))
EXISTING_ID_EXAMPLES = 15  # and, where the path has an id, valid input on a real object
# ("real id"; where only the id is input, that is the one case there is)
MIN_TOTAL_CASES = 1000

# Every check schemathesis has ("all"), but two whose premise development mode denies:
EXCLUDED_CHECKS = {
    # In development mode a caller without a token is an anonymous admin by design
    # (CONTRACT section 7; tests/api/test_auth.py covers production).
    "ignored_auth",
    # "Valid input must be accepted": path ids are free strings in the spec, and a
    # malformed one is a 400 by design; a well-formed one names no object (404), and
    # bodies name sessions, agents and tasks that do not exist (404/409).
    "positive_data_acceptance",
}
load_all_checks()
CHECKS = [check for check in CHECK_REGISTRY.get_all() if check.__name__ not in EXCLUDED_CHECKS]
REQUIRED_CHECKS = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
}
assert {check.__name__ for check in CHECKS} >= REQUIRED_CHECKS

CASES: Counter = Counter()  # (operation label, kind of input) -> cases run
FAILED: Counter = Counter()  # (operation label, kind of input) -> failed runs
STATUSES: Counter = Counter()  # status code -> responses


web = live_server_fixture(worker=False)


@pytest.fixture(scope="module")
def api_schema(web):
    """The served spec, less its bearer security requirements: the server runs in
    development mode, where no token is needed, and a made-up token is refused alike on
    every route (tests/api/test_auth.py covers tokens). With them, schemathesis would send
    random `Authorization` headers (all 401) and count a missing one as invalid input."""
    spec = requests.get(f"{web}/openapi.json", timeout=10).json()
    spec.pop("security", None)
    for operations in spec["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    return schemathesis.openapi.from_dict(spec)


@pytest.fixture(scope="module")
def ids(web) -> dict[str, str]:
    return existing_ids(web)


def existing_ids(web: str) -> dict[str, str]:
    """Ids of real objects, so that cases also reach past the "no such id" answers."""
    work_session = requests.post(f"{web}/api/v1/sessions", json={"title": "fuzz"}, timeout=10)
    agent = requests.post(
        f"{web}/api/v1/agents/register",
        json={"name": "fuzz-agent", "type": "BACKEND", "capabilities": ["CODE_GENERATION"]},
        timeout=10,
    )
    session_id = work_session.json()["id"]
    task = requests.post(
        f"{web}/api/v1/tasks", json={"session_id": session_id, "title": "fuzz"}, timeout=10
    )
    webhook = requests.post(
        f"{web}/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/fuzz", "event_types": ["task.*"]},
        timeout=10,
    )
    return {
        "session_id": session_id,
        "agent_id": agent.json()["id"],
        "task_id": task.json()["id"],
        "webhook_id": webhook.json()["id"],
    }


def fuzz_operation(
    operation, web: str, mode: GenerationMode, examples: int, path_parameters=None
) -> None:
    """Hypothesis runs `examples` cases of one operation; raises on the first failure
    (shrunk to a minimal case)."""
    label = (operation.label, "real id" if path_parameters else mode.value)
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    def run(case):
        CASES[label] += 1
        response = case.call_and_validate(base_url=web, checks=CHECKS, timeout=10)
        STATUSES[response.status_code] += 1

    try:
        run()
    except (Exception, BaseExceptionGroup):
        FAILED[label] += 1
        raise


def test_fuzz(api_schema, web, ids):
    """Every operation of the spec, valid and invalid input; all failures are reported."""
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:
        # A path parameter is a free string (a malformed id is a 400 by design), so an
        # operation with neither query nor body has no invalid input to generate.
        negatable = bool(len(operation.query)) or bool(len(operation.body))
        plan = [(m, n, None) for m, n in PLAN if negatable or m.is_positive]
        names = [p.name for p in operation.path_parameters]
        if names:  # valid input on a real object too
            plan.append((GenerationMode.POSITIVE, EXISTING_ID_EXAMPLES, {n: ids[n] for n in names}))
        for mode, examples, path_parameters in plan:
            try:
                fuzz_operation(operation, web, mode, examples, path_parameters)
            except (Exception, BaseExceptionGroup) as exc:
                kind = "real id" if path_parameters else mode.value
                failures.append(f"{operation.label} ({kind}):\n{exc}")
    assert not failures, "\n\n".join(failures)


def test_fuzz_figures(capsys):
    """Runs after `test_fuzz`: the figures, and the floor on the number of cases."""
    if not CASES:
        pytest.skip("test_fuzz did not run")
    per_operation: dict[str, dict[str, int]] = {}
    for (label, kind), count in CASES.items():
        per_operation.setdefault(label, {})[kind] = count
    lines = [
        f"  {sum(kinds.values()):5d}  {label}  ("
        + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
        + ")"
        for label, kinds in sorted(per_operation.items())
    ]
    total = sum(CASES.values())
    failed = sum(FAILED.values())
    report = "\n".join(
        [
            "",
            f"schemathesis: {total} cases over {len(per_operation)} operations, "
            f"{failed} failed runs",
            *lines,
            "  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(STATUSES.items())),
        ]
    )
    with capsys.disabled():  # shown without -s too
        print(report)
    assert total >= MIN_TOTAL_CASES, report


# -- Deep nesting and lone surrogates, in every body -----------------------------------

BODY_EXAMPLES = 12  # per operation and kind of input


def body_operations(spec: dict) -> list[tuple[str, str, list[str]]]:
    """(method, path, the body's property names) of every operation that can take a
    body: a body is checked even where the operation reads none."""
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method.upper() not in BODY_METHODS or not isinstance(operation, dict):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            found.append((method, path, sorted(schema.get("properties", {}))))
    return found


@st.composite
def deep_json(draw) -> str:
    """Arrays and objects, in a drawn pattern, nested deeper than the limit."""
    depth = draw(st.integers(MAX_JSON_DEPTH + 1, 5000))
    pattern = draw(st.text(alphabet="[{", min_size=1, max_size=6))
    opens = (pattern * (depth // len(pattern) + 1))[:depth]
    leaf = draw(st.sampled_from(["1", '"x"', "null", "[]", "{}", '"]}]}"']))
    head = "".join("[" if c == "[" else '{"k": ' for c in opens)
    tail = "".join("]" if c == "[" else "}" for c in reversed(opens))
    return head + leaf + tail


@st.composite
def lone_surrogate_text(draw) -> str:
    """A JSON string literal holding one lone surrogate (as an escape) among other text."""
    code = draw(st.integers(0xD800, 0xDFFF))
    before, after = draw(st.text(max_size=8)), draw(st.text(max_size=8))
    if 0xD800 <= code <= 0xDBFF:  # a high surrogate is lone if no low one follows
        after = "." + after
    return json.dumps(before)[:-1] + f"\\u{code:04x}" + json.dumps(after)[1:]


def post_body(web: str, method: str, path: str, ids: dict, text: str) -> requests.Response:
    for name, value in ids.items():
        path = path.replace(f"{{{name}}}", value)
    return requests.request(
        method,
        f"{web}{path}",
        data=text.encode(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def assert_refused(response: requests.Response, body: str) -> None:
    assert response.status_code == 400, (body[:200], response.text)
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["request_id"] == response.headers["X-Request-ID"]


def fuzz_bodies(web, ids, bodies) -> None:
    """Every body operation, with `bodies(names)`: a strategy of bodies that use a
    property name of the operation's body, or an unknown one."""
    spec = requests.get(f"{web}/openapi.json", timeout=10).json()
    operations = body_operations(spec)
    assert len(operations) >= 15, operations
    for method, path, properties in operations:
        strategy = bodies(st.sampled_from([*properties, "not_in_the_schema"]))
        fuzz_body_operation(web, method, path, ids, strategy)


def fuzz_body_operation(web, method: str, path: str, ids: dict, strategy) -> None:
    @given(body=strategy)
    @settings(
        max_examples=BODY_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(body):
        assert_refused(post_body(web, method, path, ids, body), body)

    run()


def test_fuzz_deep_nesting(web, ids):
    """Nesting past MAX_JSON_DEPTH, in any field or an unknown one, of every body: 400."""

    @st.composite
    def bodies(draw, names):
        name = draw(names)
        return f'{{"{name}": {draw(deep_json())}}}'

    fuzz_bodies(web, ids, bodies)


def test_fuzz_lone_surrogates(web, ids):
    """A lone surrogate as any field's value, in a list, or as a key, of every body: 400."""

    @st.composite
    def bodies(draw, names):
        name, text = draw(names), draw(lone_surrogate_text())
        return draw(
            st.sampled_from(
                [
                    f'{{"{name}": {text}}}',
                    f'{{"{name}": [1, {{"k": {text}}}]}}',
                    f'{{"{name}": {{{text}: 1}}}}',
                    f"{{{text}: 1}}",
                ]
            )
        )

    fuzz_bodies(web, ids, bodies)
