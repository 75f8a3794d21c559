"""Decomposition templates, kept as data: each a small DAG of subtasks.

Steps are listed so that every step comes after the steps it depends on; a subtask is
titled `"<step title>: <parent title>"`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.enums import Capability as C
from shared.enums import DecompositionTemplate as T


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    capabilities: tuple[C, ...]
    depends_on: tuple[str, ...] = ()


TEMPLATES: dict[T, tuple[Step, ...]] = {
    T.MICROSERVICE: (
        Step("design_api", "Design API contract", (C.SYSTEM_DESIGN,)),
        Step("implement_service", "Implement service", (C.CODE_GENERATION,), ("design_api",)),
        Step(
            "implement_persistence", "Implement persistence", (C.CODE_GENERATION,), ("design_api",)
        ),
        Step(
            "write_tests",
            "Write tests",
            (C.TESTING,),
            ("implement_service", "implement_persistence"),
        ),
        Step("review", "Review", (C.CODE_REVIEW,), ("write_tests",)),
        Step("deploy", "Deploy", (C.DEPLOYMENT,), ("review",)),
    ),
    T.CRUD: (
        Step("design_schema", "Design data model", (C.SYSTEM_DESIGN,)),
        Step("implement_model", "Implement model", (C.CODE_GENERATION,), ("design_schema",)),
        Step(
            "implement_endpoints", "Implement endpoints", (C.CODE_GENERATION,), ("implement_model",)
        ),
        Step("write_tests", "Write tests", (C.TESTING,), ("implement_endpoints",)),
        Step("review", "Review", (C.CODE_REVIEW,), ("write_tests",)),
    ),
    T.FEATURE: (
        Step("design", "Design", (C.SYSTEM_DESIGN,)),
        Step("implement", "Implement", (C.CODE_GENERATION,), ("design",)),
        Step("write_tests", "Write tests", (C.TESTING,), ("implement",)),
        Step("document", "Document", (C.DOCUMENTATION,), ("implement",)),
        Step("review", "Review", (C.CODE_REVIEW,), ("write_tests", "document")),
    ),
    T.BUGFIX: (
        Step("reproduce", "Reproduce", (C.DEBUGGING,)),
        Step("fix", "Fix", (C.DEBUGGING, C.CODE_GENERATION), ("reproduce",)),
        Step("regression_test", "Write regression test", (C.TESTING,), ("fix",)),
        Step("review", "Review", (C.CODE_REVIEW,), ("regression_test",)),
    ),
    T.SECURITY: (
        Step("threat_model", "Threat model", (C.SECURITY_AUDIT, C.SYSTEM_DESIGN)),
        Step("audit", "Audit code", (C.SECURITY_AUDIT,), ("threat_model",)),
        Step("fix_findings", "Fix findings", (C.CODE_GENERATION,), ("audit",)),
        Step("verify", "Verify fixes", (C.SECURITY_AUDIT, C.TESTING), ("fix_findings",)),
        Step("review", "Review", (C.CODE_REVIEW,), ("verify",)),
    ),
    T.UI: (
        Step("design_ui", "Design UI", (C.SYSTEM_DESIGN,)),
        Step("implement_components", "Implement components", (C.CODE_GENERATION,), ("design_ui",)),
        Step("wire_api", "Wire to the API", (C.CODE_GENERATION,), ("design_ui",)),
        Step("ui_tests", "Write UI tests", (C.TESTING,), ("implement_components", "wire_api")),
        Step("review", "Review", (C.CODE_REVIEW,), ("ui_tests",)),
    ),
}
