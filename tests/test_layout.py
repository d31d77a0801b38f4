"""The layout's one rule: runtime code (the shared package and the three services) imports no
tooling: no benchmarks, CLI, dataset tooling, orchestration, jobs or research code. Rules both
sides apply (an item's validation, text and Chroma metadata) live in the shared package."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME = (
    "Prod/common",
    "Prod/als_reco_engine",
    "Prod/als_trainer",
    "Prod/chat_reco_engine",
    "Prod/web",
)
TOOLING = (
    "Prod.bench",
    "Prod.batch",
    "Prod.cli",
    "Prod.datasets",
    "Prod.orchestrate",
    "Prod.scripts",
    "Prod.examples",
    "Prod.llm_server",
    "Modeling",
)


def _imported(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_runtime_code_imports_no_tooling():
    files = [p for folder in RUNTIME for p in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 40  # the scan sees the packages
    offending = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in _imported(path)
        if any(module == t or module.startswith(f"{t}.") for t in TOOLING)
    ]
    assert offending == []
