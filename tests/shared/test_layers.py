"""The structure docs/ARCHITECTURE.md promises, checked on the source: the services form
layers (no import cycle, no import hidden in a function), and `shared` imports neither
Flask nor Celery nor the client."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICES = ROOT / "shared" / "services"


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(module imported, at top level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            found += [(name, id(node) in top) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
    return found


def _service_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in SERVICES.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in modules:
        imported = {m for m, _ in _imports(SERVICES / f"{name}.py")}
        graph[name] = {m for m in modules if f"shared.services.{m}" in imported}
    return graph


def test_services_import_each_other_without_cycles():
    graph = _service_graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_services_import_at_the_top_of_the_module():
    hidden = [
        f"{path.name}: {module}"
        for path in SERVICES.glob("*.py")
        for module, at_top in _imports(path)
        if not at_top and module.startswith("shared.")
    ]
    assert hidden == []


def test_the_domain_package_imports_no_framework_and_no_client():
    forbidden = (
        "flask",
        "celery",
        "orchestrator_api",
        "orchestrator_worker",
        "orchestrator_client",
    )
    offending = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "shared").rglob("*.py")
        for module, _ in _imports(path)
        if module.split(".")[0] in forbidden
    ]
    assert offending == []


def test_the_server_reads_its_environment_only_through_settings():
    """Every variable is a field of shared.config.Settings (validated at start, documented
    once); PROMETHEUS_MULTIPROC_DIR is the processes' own plumbing (shared/metrics_dir.py)."""
    allowed = {ROOT / "shared" / "config.py", ROOT / "shared" / "metrics_dir.py"}
    sources = [ROOT / "gunicorn.conf.py"] + [
        path
        for package in ("shared", "orchestrator_api", "orchestrator_worker")
        for path in (ROOT / package).rglob("*.py")
    ]
    readers = [
        str(path.relative_to(ROOT))
        for path in sources
        if path not in allowed
        and ("os.environ.get(" in path.read_text() or "getenv(" in path.read_text())
    ]
    assert readers == []


def test_a_service_without_settings_fails_loudly():
    import pytest
    from sqlalchemy.orm import Session

    from shared.services.common import settings_of

    with pytest.raises(RuntimeError, match="no settings"):
        settings_of(Session())
