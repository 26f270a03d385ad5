"""Imports only go down the layers listed in ``solo_mixmask/__init__.py``, and never in a circle.

Every module of the package is parsed (not imported), its imports at module level and inside
functions alike, relative ones resolved. Importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, so those packages count as imported too (unless they enclose the importer,
which Python has begun importing already). The rules:

- no cycle, through any kind of import: a function-local import does not break a cycle, it only
  postpones it to the first call;
- no import of a higher layer than the importer's own;
- every module's top-level name (``config`` for ``solo_mixmask.config.loading``) is in a layer;
- no function-local import of another module of the package, except in ``DEFERRED``.

The planted-violation tests run the same checks on a throwaway package, so a checker that
reports nothing fails there.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1] / "solo_mixmask"
PACKAGE = "solo_mixmask"
#: the name the layer list gives the package's own ``__init__``
INIT = "__init__"

#: modules (or subpackages) whose function-local imports of the package are deliberate, and why
DEFERRED: dict[str, str] = {
    "solo_mixmask.cli": "a subcommand loads Lightning, the methods and the data pipeline only "
                        "when it runs, so `solo-mixmask --help` and argument errors answer "
                        "without them",
    "solo_mixmask.eval.checkpoints": "the methods (Lightning) load only when a checkpoint's whole "
                                     "module is rebuilt, so the zoo commands stay without them",
    "solo_mixmask.solo.registry": "solo_mixmask.solo.methods imports solo-learn, an optional "
                                  "dependency",
}


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``target`` at ``line``; ``local``: inside a function; ``implied``:
    ``target`` is a package above the module named there, whose ``__init__`` the import runs."""

    importer: str
    target: str
    line: int
    local: bool
    implied: bool = False

    @property
    def where(self) -> str:
        return (f"line {self.line}" + (", inside a function" if self.local else "")
                + (", via the package's __init__" if self.implied else ""))

    def __str__(self) -> str:
        return f"{self.importer} -> {self.target} ({self.where})"


def cycle_text(cycle: list[Edge]) -> str:
    """``a (line 3) -> b (line 9, inside a function) -> a``: each module with the line of its
    import of the next."""
    return " -> ".join(f"{e.importer} ({e.where})" for e in cycle) + f" -> {cycle[0].importer}"


def layers_of(root: Path) -> list[list[str]]:
    """The layer groups, lowest first, from the indented block after ``Layers`` in the package's
    top docstring (one group a line, names separated by commas)."""
    doc = ast.get_docstring(ast.parse((root / "__init__.py").read_text())) or ""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Layers")), None)
    assert start is not None, f"{root}/__init__.py: the docstring has no 'Layers' paragraph"
    groups: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("    "):
            groups.append([name.strip() for name in line.split(",") if name.strip()])
        elif groups:
            break
    assert groups, f"{root}/__init__.py: the 'Layers' paragraph lists no layers"
    return groups


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(tree: ast.AST, local: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement with whether a function encloses it."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, local
        else:
            inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            yield from _imports(node, inner)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(name: str, importer: str, modules: Mapping[str, Path]
             ) -> Iterator[tuple[str, bool]]:
    """``name`` itself, and (implied) the packages above it that importing it runs: all but
    those that enclose the importer, which Python entered before the importer."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        above = ".".join(parts[:i])
        if above in modules and above != importer and not importer.startswith(above + "."):
            yield above, True
    if name in modules and name != importer:
        yield name, False


def import_edges(root: Path, package: str) -> tuple[dict[str, Path], list[Edge]]:
    """The package's modules and every import between them."""
    modules = module_names(root, package)
    edges: list[Edge] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, local in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = _absolute(module, is_package, node)
                # ``from pkg import sub`` imports the submodule when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names]
            found: dict[str, bool] = {}
            for name in names:
                for target, implied in _targets(name, module, modules):
                    found[target] = found.get(target, True) and implied
            edges += [Edge(module, t, node.lineno, local, found[t]) for t in sorted(found)]
    return modules, edges


def cycles(edges: list[Edge]) -> list[tuple[list[Edge], set[str]]]:
    """One shortest cycle through each strongly connected group of modules (Tarjan), as its
    edges, with the whole group (every module in it is on some cycle)."""
    out: dict[str, list[Edge]] = {}
    for e in edges:
        out.setdefault(e.importer, []).append(e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for e in out.get(v, []):
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(out):
        if v not in index:
            visit(v)
    found = []
    for group in groups:
        start = min(group)
        # breadth-first from ``start`` back to itself inside the group: a shortest cycle
        paths: dict[str, list[Edge]] = {start: []}
        queue = [start]
        cycle: Optional[list[Edge]] = None
        while queue and cycle is None:
            v = queue.pop(0)
            for e in out.get(v, []):
                if e.target == start:
                    cycle = paths[v] + [e]
                    break
                if e.target in group and e.target not in paths:
                    paths[e.target] = paths[v] + [e]
                    queue.append(e.target)
        assert cycle is not None
        found.append((cycle, group))
    return found


def layer_of(module: str, package: str, layers: list[list[str]]) -> Optional[int]:
    """The index of the module's layer (None: its top-level name is in none)."""
    name = module[len(package) + 1:].split(".")[0] if module != package else INIT
    return next((i for i, group in enumerate(layers) if name in group), None)


def upward(edges: list[Edge], package: str, layers: list[list[str]]) -> list[Edge]:
    """Imports of a module in a higher layer than the importer's (the implied package edges
    repeat their module's layer, so they are left out)."""
    bad = []
    for e in edges:
        if e.implied:
            continue
        mine, theirs = layer_of(e.importer, package, layers), layer_of(e.target, package, layers)
        if mine is not None and theirs is not None and theirs > mine:
            bad.append(e)
    return bad


def unlisted(modules: Mapping[str, Path], package: str, layers: list[list[str]]) -> list[str]:
    return [m for m in modules if layer_of(m, package, layers) is None]


def local_imports(edges: list[Edge], deferred: Mapping[str, str]) -> list[Edge]:
    """Function-local imports of the package outside the modules ``deferred`` allows."""
    return [e for e in edges if e.local and not e.implied and not any(
        e.importer == m or e.importer.startswith(m + ".") for m in deferred)]


def problems(root: Path, package: str, deferred: Mapping[str, str]) -> dict[str, list[str]]:
    """Each rule's violations, one line each (empty lists: none)."""
    layers = layers_of(root)
    modules, edges = import_edges(root, package)
    return {
        "cycles": [cycle_text(cycle) + (f" [{len(group)} modules are in cycles with it: "
                                        f"{', '.join(sorted(group))}]" if len(group) > len(cycle)
                                        else "") for cycle, group in cycles(edges)],
        "upward": [f"{e} (layer {layer_of(e.importer, package, layers)} imports layer "
                   f"{layer_of(e.target, package, layers)})" for e in upward(edges, package, layers)],
        "unlisted": [f"{m}: its top-level name is in no layer" for m in
                     unlisted(modules, package, layers)],
        "local": [str(e) for e in local_imports(edges, deferred)],
    }


@pytest.fixture(scope="module")
def found() -> dict[str, list[str]]:
    return problems(ROOT, PACKAGE, DEFERRED)


def test_layers_are_read_from_the_package_docstring() -> None:
    layers = layers_of(ROOT)
    assert "errors" in layers[0] and INIT in layers[0]
    assert "cli" in layers[-1]
    names = [n for group in layers for n in group]
    assert len(names) == len(set(names)), "a name is in two layers"


@pytest.mark.parametrize("rule", ["cycles", "upward", "unlisted", "local"])
def test_the_package_keeps_its_layers(found: dict[str, list[str]], rule: str) -> None:
    assert not found[rule], f"{rule}:\n" + "\n".join(found[rule])


def test_deferred_modules_exist() -> None:
    modules = module_names(ROOT, PACKAGE)
    assert not set(DEFERRED) - set(modules)


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


LAYERED = '"""A package.\n\nLayers, lowest first:\n\n    __init__, low\n    mid\n    high\n"""\n'


def test_a_planted_cycle_and_upward_import_are_reported(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "__init__.py": LAYERED,
        "low.py": "def f():\n    from .high import g\n    return g\n",
        "mid/__init__.py": "",
        "mid/core.py": "from ..low import f\n",
        "high.py": "from pkg.mid import core\n\n\ndef g():\n    return core\n",
    })
    found = problems(root, "pkg", {})
    assert found["cycles"] == ["pkg.high (line 1) -> pkg.mid.core (line 1) -> "
                               "pkg.low (line 2, inside a function) -> pkg.high"]
    assert found["upward"] == ["pkg.low -> pkg.high (line 2, inside a function) (layer 0 "
                               "imports layer 2)"]
    assert found["local"] == ["pkg.low -> pkg.high (line 2, inside a function)"]
    assert found["unlisted"] == []
    assert problems(root, "pkg", {"pkg.low": "planted"})["local"] == []


def test_a_planted_package_cycle_and_unlisted_module_are_reported(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "__init__.py": LAYERED,
        "low.py": "import os\n",
        "extra.py": "from . import low\n",
        # a submodule naming its own package back, while the package imports the submodule
        "high/__init__.py": "from .a import A\n\nB = 2\n",
        "high/a.py": "A = 1\n\n\ndef again():\n    from . import B\n    return B\n",
    })
    found = problems(root, "pkg", {})
    assert found["cycles"] == ["pkg.high (line 1) -> pkg.high.a (line 5, inside a function) "
                               "-> pkg.high"]
    assert found["unlisted"] == ["pkg.extra: its top-level name is in no layer"]
    assert found["upward"] == []
    # an import of a sibling runs the enclosing package's __init__ already begun: no edge to it
    _, edges = import_edges(root, "pkg")
    assert [str(e) for e in edges if e.importer == "pkg.extra"] == [
        "pkg.extra -> pkg.low (line 1)"]
