"""The layers hold: cxrweb's shared parts (audit, roles, permissions, responses, middleware, API
tokens) import neither app, and the training app never imports diagnosis. Only the wiring
(settings, urls, celery) names the apps."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WIRING = {"settings.py", "urls.py", "celery.py", "asgi.py", "wsgi.py"}


def _package_of(path: Path) -> str:
    """The package a file's relative imports start from."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def _imports(path: Path) -> list[str]:
    """Every module name a file imports, at any depth in it (a function-level import too), with
    relative imports resolved; ``from a import b`` gives both ``a`` and ``a.b``."""
    package = _package_of(path)
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def _offenders(files: list[Path], forbidden: set[str]) -> list[str]:
    assert files, "the scan found no files"
    return [
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in files
        for name in _imports(path)
        if name.split(".")[0] in forbidden
    ]


def test_cxrweb_s_shared_parts_import_neither_app() -> None:
    files = [
        p
        for p in sorted((REPO_ROOT / "cxrweb").rglob("*.py"))
        if not (p.parent == REPO_ROOT / "cxrweb" and p.name in WIRING)
    ]
    assert _offenders(files, {"diagnosis", "training"}) == []


def test_the_training_app_does_not_import_diagnosis() -> None:
    # The ML core (training/ml) has its own guard, tests/training/ml/test_no_django.py.
    files = [
        p
        for p in sorted((REPO_ROOT / "training").rglob("*.py"))
        if "ml" not in p.relative_to(REPO_ROOT / "training").parts[:1]
    ]
    assert _offenders(files, {"diagnosis"}) == []


def _module_graph() -> dict[str, set[str]]:
    """Every module of the three packages and the modules of them it imports, at any depth in
    the file (a function-level import is an edge too). Relative imports are resolved."""
    modules: dict[str, Path] = {}
    for package in ("cxrweb", "diagnosis", "training"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for target in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_circle_in_the_project() -> None:
    graph = _module_graph()
    assert len(graph) > 100, "the scan found too few modules"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dispatch_never_imports_the_consumers_of_its_tasks() -> None:
    graph = _module_graph()
    for dispatch in ("diagnosis.dispatch", "training.dispatch"):
        consumers = {
            m for m in graph[dispatch] if m.endswith(".tasks") or m.startswith("diagnosis.worker")
        }
        assert consumers == set(), dispatch


def test_the_web_side_never_imports_the_worker_side() -> None:
    graph = _module_graph()
    web = [
        m
        for m in graph
        if m.split(".")[:2]
        in (
            ["diagnosis", "views"],
            ["diagnosis", "api"],
            ["diagnosis", "forms"],
            ["diagnosis", "selectors"],
            ["diagnosis", "services"],
            ["training", "views"],
            ["training", "forms"],
            ["training", "selectors"],
            ["training", "services"],
        )
    ]
    assert len(web) > 15
    offenders = {
        m: sorted(t for t in graph[m] if t.startswith("diagnosis.worker") or t.endswith(".tasks"))
        for m in web
    }
    assert {m: t for m, t in offenders.items() if t} == {}
