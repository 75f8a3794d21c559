"""The dashboard's ES modules (orchestrator_api/static/dashboard/*.js), checked on the
source as docs/ARCHITECTURE.md describes them: their imports form no cycle, only main.js
imports app.js, every import names a module that exists, on one line (the page's asset
test follows those lines), and no module exports a mutable `let` binding."""

from __future__ import annotations

import pathlib
import re

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "orchestrator_api/static/dashboard"
IMPORT = re.compile(r'^import [^;]* from "\./([\w.]+)";$', re.M)
ANY_IMPORT = re.compile(r"^\s*import\b", re.M)
EXPORTED_LET = re.compile(r"^\s*export\s+(let|var)\b|^\s*export\s*\{", re.M)


def _sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(DASHBOARD.glob("*.js"))}


def _graph() -> dict[str, list[str]]:
    return {name: IMPORT.findall(text) for name, text in _sources().items()}


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        trail.append(name)
        for imported in graph.get(name, []):
            if state.get(imported) == "open":
                return trail[trail.index(imported) :] + [imported]
            if imported not in state and (found := visit(imported)):
                return found
        trail.pop()
        state[name] = "done"
        return None

    for name in graph:
        if name not in state and (found := visit(name)):
            return found
    return None


def test_the_modules_import_each_other_without_cycles():
    graph = _graph()
    assert len(graph) > 10
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a.js": ["b.js"], "b.js": ["c.js"], "c.js": ["a.js"]}) == [
        "a.js",
        "b.js",
        "c.js",
        "a.js",
    ]
    assert _cycle({"a.js": ["b.js", "c.js"], "b.js": ["c.js"], "c.js": []}) is None


def test_only_main_imports_app_and_every_import_exists_on_one_line():
    graph = _graph()
    importers_of_app = sorted(name for name, imported in graph.items() if "app.js" in imported)
    assert importers_of_app == ["main.js"]
    assert not [name for name, imported in graph.items() if "main.js" in imported]
    for name, text in _sources().items():
        assert len(ANY_IMPORT.findall(text)) == len(IMPORT.findall(text)), (
            f"{name}: an import the pattern does not read (one line, ./name.js)"
        )
        for imported in graph[name]:
            assert (DASHBOARD / imported).is_file(), f"{name} imports {imported}: missing"


def test_no_module_exports_mutable_let_state():
    offenders = [
        f"{name}: {match.group(0).strip()}"
        for name, text in _sources().items()
        for match in EXPORTED_LET.finditer(text)
    ]
    assert offenders == []
