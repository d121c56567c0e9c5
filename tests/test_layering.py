"""The import rules of docs/architecture.md, checked on the source: `filters` imports
nothing of the project, `protocol.py` nothing but pydantic and the standard library, and the
agent nothing of the server but `policy_server.protocol` (so an agent can be built alone)."""

import ast
from pathlib import Path

import pytest

PROJECT = ("agent", "policy_server", "filters", "reports")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _project_imports(folder: Path) -> dict[str, set[str]]:
    found = {}
    for path in folder.rglob("*.py"):
        ours = {name for name in _imports(path) if name.split(".")[0] in PROJECT}
        if ours:
            found[str(path)] = ours
    return found


def test_filters_imports_nothing_of_the_project(repo_root):
    offenders = {p: names for p, names in _project_imports(repo_root / "filters").items()
                 if any(not n.startswith("filters") for n in names)}
    assert offenders == {}


def test_protocol_imports_nothing_of_the_project(repo_root):
    names = _imports(repo_root / "policy_server" / "protocol.py")
    assert {n for n in names if n.split(".")[0] in PROJECT} == set()


@pytest.mark.parametrize("allowed", [("agent", "filters", "policy_server.protocol")])
def test_the_agent_imports_only_filters_and_the_protocol(repo_root, allowed):
    offenders = {p: sorted(n for n in names if not n.startswith(allowed))
                 for p, names in _project_imports(repo_root / "agent").items()}
    assert {p: n for p, n in offenders.items() if n} == {}
