"""The import graph of `src/divdistill`, function-local imports included, for the architecture tests.

An edge A -> B means module A imports divdistill module B somewhere: at module level, inside a function, in a
`try`; only `if TYPE_CHECKING:` blocks are left out (they never run). Importing `divdistill.x.y` also runs the
package `divdistill.x`, so that is an edge too. Two PEP 562 mechanisms are not edges: a package `__init__`'s
module-level `__getattr__` (a lazy re-export runs when a name is first looked up, after every import finished),
and the package root `divdistill` itself, which imports nothing eagerly (a test checks that).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "divdistill"


@dataclass
class ImportGraph:
    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    #: (module, target, line) of every import of a divdistill module that sits inside a function.
    local_imports: list[tuple[str, str, int]] = field(default_factory=list)

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (Tarjan), each sorted."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []

        def visit(node: str) -> None:
            index[node] = low[node] = len(index)
            stack.append(node)
            on_stack.add(node)
            for target in sorted(self.edges.get(node, ())):
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

        for module in sorted(self.modules):
            if module not in index:
                visit(module)
        return sorted(found)


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _known(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) if parts else None


def _skipped_nodes(tree: ast.Module, is_package: bool) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for statement in node.body for sub in ast.walk(statement))
    if is_package:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                skipped.update(id(sub) for sub in ast.walk(node))
    return skipped


def _lazy_root_names(path: Path) -> dict[str, str]:
    """The package root's `_LAZY` table (public name -> defining module): `from divdistill import X` imports it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets) and node.value is not None:
                return ast.literal_eval(node.value)
    return {}


def build(src: Path = SRC) -> ImportGraph:
    modules = {module_name(path, src): path for path in sorted((src / ROOT).rglob("*.py"))}
    lazy_root = _lazy_root_names(modules[ROOT])
    graph = ImportGraph(modules)
    seen_local: set[tuple[str, int]] = set()
    for module, path in modules.items():
        if module == ROOT:
            continue
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        skipped = _skipped_nodes(tree, is_package)
        in_function = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(node)
        }
        targets = graph.edges.setdefault(module, set())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skipped:
                continue
            names = _imported_names(module, node, is_package)
            if isinstance(node, ast.ImportFrom) and names[0] == ROOT:
                names += [lazy_root[alias.name] for alias in node.names if alias.name in lazy_root]
            for name in names:
                target = _known(name, modules)
                if target is None or target in (module, ROOT):
                    continue
                targets.add(target)
                parts = target.split(".")
                for depth in range(2, len(parts)):  # the packages it runs on the way (not our own: they run)
                    ancestor = ".".join(parts[:depth])
                    if not module.startswith(ancestor + "."):
                        targets.add(ancestor)
                if id(node) in in_function and (module, node.lineno) not in seen_local:
                    seen_local.add((module, node.lineno))
                    graph.local_imports.append((module, target, node.lineno))
    return graph
