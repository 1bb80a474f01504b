"""The layers read one way: bench -> workers -> labeling -> mlcore (ARCHITECTURE.md).

Read from the source, every import counted, also those inside functions: mlcore is free of Django
and of the app, labeling uses workers only through the job functions it enqueues, and no two
modules import each other round a circle. A subprocess then imports every labeling module (views,
forms, commands) with workers made unimportable, so nothing in workers is needed to render a page
or validate a form."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mlcore", "labeling", "workers", "collage_app")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import statement of a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found += [(base, alias.name) for alias in node.names]
    return found


def _own_module(dotted: str) -> str | None:
    """The project module a dotted import name lands in (None: a third-party one)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name in MODULES:
        for module, imported in _imports(name):
            target = _own_module(f"{module}.{imported}" if imported else module)
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_project_modules():
    assert _cycles(_graph()) == []


def test_mlcore_imports_neither_django_nor_the_app():
    for name in (n for n in MODULES if n.split(".")[0] == "mlcore"):
        for module, _ in _imports(name):
            assert module.split(".")[0] not in ("django", "labeling", "workers", "collage_app"), (
                f"{name} imports {module}"
            )


def _enqueued_job_functions() -> set[str]:
    """Dotted paths of job functions labeling hands to RQ ("workers.<module>.<function>")."""
    pattern = re.compile(r"""["'](workers\.\w+\.\w+)["']""")
    return {
        match
        for name, path in MODULES.items()
        if name.split(".")[0] == "labeling"
        for match in pattern.findall(path.read_text())
    }


def test_labeling_imports_from_workers_only_the_job_functions_it_enqueues():
    jobs = _enqueued_job_functions()
    assert "workers.runner.execute" in jobs  # what labeling.jobs.enqueue.enqueue hands to RQ
    for name in (n for n in MODULES if n.split(".")[0] == "labeling"):
        for module, imported in _imports(name):
            if module.split(".")[0] != "workers":
                continue
            assert imported is not None and f"{module}.{imported}" in jobs, (
                f"{name} imports {module}{'.' + imported if imported else ''}, which is not a "
                "job function labeling enqueues: move what it needs into labeling"
            )


BLOCK_WORKERS = """
import importlib, pkgutil, sys

class NoWorkers:
    def find_spec(self, name, path=None, target=None):
        if name == "workers" or name.startswith("workers."):
            raise ImportError(f"workers is unimportable in this test: {name}")

sys.meta_path.insert(0, NoWorkers())
import django
django.setup()
import labeling
names = [m.name for m in pkgutil.walk_packages(labeling.__path__, "labeling.")]
for name in names:
    importlib.import_module(name)
import collage_app.urls
print(len(names))
"""


def test_every_labeling_module_imports_without_workers(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "collage_app.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_WORKERS], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) > 20
