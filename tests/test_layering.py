"""The import direction of symclone's parts is a tested rule (see CONTRIBUTING.md and docs/design.md §1).

Every ``import`` in the package — module level and inside functions — is read with ``ast``. Each part of
the package has a layer; a part may import its own layer and the layers below, never above. Only the
entry points (``symclone/__init__.py``, ``symclone.cli``, ``symclone.commands``) see everything.

Control: ``test_a_wrong_import_is_caught`` feeds the checker a module that imports upwards.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: part of the package -> layer (low to high). Parts are the first component below ``symclone``.
LAYERS: dict[str, int] = {
    # 0: argument checks, used by everything
    "validation": 0,
    # 1: utilities that know nothing about groups or models
    "dtypes": 1, "io": 1, "progress": 1, "schedules": 1, "config": 1, "runtime": 1, "memory": 1, "layered": 1,
    # 2: groups and representations
    "groups": 2,
    # 3: what groups make possible, and the training core
    "equivariance": 3, "data": 3, "registry": 3, "distributed": 3, "trainer": 4,
    # 5: models
    "teachers": 5, "students": 5,
    # 6: cloning, then reading runs back
    "distill": 6, "runs": 7,
    # 8: what uses cloned runs
    "symmetrize": 8, "analysis": 8,
    "finetune": 9, "graphs": 9,
    # entry points
    "commands": 10, "cli": 11, "__main__": 12, "__init__": 12,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("teachers", "students", "analysis"):  # installed as symclone.<part>
        parts = ["symclone"] + parts
    if parts[-1] == "__init__":
        parts = parts[:-1] + ["__init__"]
    return ".".join(parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import of a symclone module in ``source``."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from symclone import memory` imports the module symclone.memory
            found += [(node.lineno, f"{stem}.{a.name}" if stem == "symclone" else stem) for a in node.names]
    return [(line, m) for line, m in found if m == "symclone" or m.startswith("symclone.")]


def violations(source: str, module: str) -> list[str]:
    here = part_of(module)
    if here not in LAYERS:
        return [f"{module}: part {here!r} has no layer in tests/test_layering.py"]
    out = []
    for line, target in imported_modules(source, module):
        there = part_of(target)
        if there == here:
            continue
        if there not in LAYERS:
            out.append(f"{module}:{line} imports {target}: part {there!r} has no layer")
        elif LAYERS[there] >= LAYERS[here] and here not in ("__init__", "__main__", "cli", "commands"):
            out.append(f"{module}:{line} imports {target} ({there}, layer {LAYERS[there]}) from layer "
                       f"{LAYERS[here]} ({here}): imports must point down")
    return out


def _sources():
    for base in ("symclone", "teachers", "students", "analysis"):
        for path in sorted((ROOT / base).rglob("*.py")):
            yield path


def test_imports_point_down():
    bad = [v for path in _sources() for v in violations(path.read_text(encoding="utf-8"), module_name(path))]
    assert not bad, "\n".join(bad)


def test_a_wrong_import_is_caught():
    wrong = "def f():\n    from symclone.distill import distill  # a function-level import upwards\n"
    assert violations(wrong, "symclone.groups._base") == [
        "symclone.groups._base:2 imports symclone.distill (distill, layer 6) from layer 2 (groups): "
        "imports must point down"]
    relative = "from ..symmetrize import Symmetrized\n"
    assert violations(relative, "symclone.distill._engine")
    assert not violations("from ..groups import get_group\n", "symclone.distill._engine")


@pytest.mark.parametrize("part", sorted({part_of(module_name(p)) for p in _sources()}))
def test_every_part_has_a_layer(part):
    assert part in LAYERS, f"add {part!r} to LAYERS in tests/test_layering.py"


def _module_graph(all_levels: bool) -> dict[str, set[str]]:
    """module -> symclone modules it imports (``all_levels``: also imports inside functions).
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    modules = {module_name(p).removesuffix(".__init__"): p for p in _sources()}
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        targets = set()
        for node in (ast.walk(tree) if all_levels else tree.body):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            else:
                continue
            for target in names:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != mod:
                    targets.add(target)
        graph[mod] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (as a list of modules, first == last), or ``[]``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


@pytest.mark.parametrize("all_levels", [False, True], ids=["module-level", "with-function-level"])
def test_no_import_cycles(all_levels):
    """The modules' imports form no cycle — at module level, and also counting the imports inside
    functions (between parts the layer rule already forbids cycles; this covers modules within a part)."""
    cycle = find_cycle(_module_graph(all_levels))
    assert not cycle, " -> ".join(cycle)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]   # control
