"""Dependencies point one way. Every import in ``studio/`` — function-level ones included, read with ``ast`` rather
than run — is an edge between two of studio's packages (its subpackages and top-level modules); no edge may go up
the layers below, and no two packages may depend on each other, however many steps apart. Nothing below
``studio/ui`` imports Gradio. The table is the one docs/ARCHITECTURE.md shows."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"

# Top to bottom. A package imports the packages of its own row (without a cycle) and of the rows below it.
LAYERS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("entry points", (("cli", "ui"),)),
    ("services", (("projects",),        # a project holds everything the services below make
                  ("serving",),         # deployments: checkpoints behind an OpenAI-compatible API
                  ("tasks",),           # imports, exports and metrics in a worker process
                  ("sharing",),         # exports, model and dataset cards, Hub pushes
                  ("evaluation",),      # metrics and human ratings of sample sets
                  ("generation",),      # sample sets from runs' checkpoints
                  ("training", "auth", "ops"))),
    ("what the services work on", (("data", "models", "examples"),)),
    ("records and processes", (("store", "processes", "placement"),)),
    ("settings and shared names", (("settings", "fields", "status", "roles"),)),
)
RANK = {package: rank for rank, row in enumerate(row for _, rows in LAYERS for row in rows) for package in row}
LAYER_OF = {package: name for name, rows in LAYERS for row in rows for package in row}


def layer_table() -> str:
    """The table as docs/ARCHITECTURE.md shows it."""
    lines = ["| layer (top to bottom) | packages |", "| --- | --- |"]
    for name, rows in LAYERS:
        lines.append(f"| {name} | " + " → ".join(", ".join(f"`{p}`" for p in row) for row in rows) + " |")
    return "\n".join(lines)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    """``studio.training.jobs`` → ``training``; ``studio.ops`` → ``ops``; None for ``studio`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported(path: Path, tree: ast.AST):
    """(line, module) for every import in the file, wherever it is; ``from studio import ops`` gives studio.ops."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            for alias in node.names:
                child = ROOT / Path(*base.split("."), alias.name)
                is_module = base.split(".")[0] == "studio" and (child.with_suffix(".py").is_file() or child.is_dir())
                yield node.lineno, f"{base}.{alias.name}" if is_module else base


def edges() -> list[tuple[str, str, str]]:
    """(importing package, imported package, where) for every import of one studio package by another."""
    found = []
    for path in sorted(STUDIO.rglob("*.py")):
        source = package_of(module_name(path))
        for line, module in imported(path, ast.parse(path.read_text(encoding="utf-8"))):
            target = package_of(module) if module.split(".")[0] == "studio" else None
            if source and target and target != source:
                found.append((source, target, f"{path.relative_to(ROOT)}:{line} imports {module}"))
    return list(dict.fromkeys(found))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_package_has_a_place_in_the_layers():
    packages = {package_of(module_name(p)) for p in STUDIO.rglob("*.py")} - {None}
    assert packages - set(RANK) == set(), "add the new package to LAYERS (and docs/ARCHITECTURE.md)"
    assert set(RANK) - packages == set(), "a package in LAYERS no longer exists"


def test_no_import_goes_up_the_layers():
    upward = [f"{where}: {LAYER_OF[source]} `{source}` may not import {LAYER_OF[target]} `{target}`"
              for source, target, where in edges() if RANK[target] < RANK[source]]
    assert not upward, "\n".join(upward)


def test_no_two_packages_depend_on_each_other():
    graph: dict[str, set[str]] = {}
    for source, target, _ in edges():
        graph.setdefault(source, set()).add(target)
    found = cycles(graph)
    involved = [where for source, target, where in edges() if any({source, target} <= set(c) for c in found)]
    assert not found, f"package cycles {found} through:\n" + "\n".join(involved)


def test_nothing_below_the_ui_imports_gradio():
    found = [f"{path.relative_to(ROOT)}:{line}" for path in STUDIO.rglob("*.py") if package_of(module_name(path)) != "ui"
             for line, module in imported(path, ast.parse(path.read_text(encoding="utf-8")))
             if module.split(".")[0] == "gradio"]
    assert not found, "\n".join(found)


def test_the_architecture_page_shows_this_table():
    assert layer_table() in (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
