"""The package's layout rules, checked by reading every import statement (module level and inside
functions) of a copy of `dacbench_remote/` on disk. docs/development.md states the rules.

`check(package_dir)` returns one line per violation; tests/test_layout_rules.py runs it on the
package and on copies with a violation put in on purpose.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "dacbench_remote"
# What runs inside images: it must import nothing of the host's side.
IMAGE_SIDE = ("server", "wire")
HOST_SIDE = ("host", "runtimes", "images", "sweeps", "experiments", "cli")
# images/ builds and stores images: it knows nothing of runtimes, episodes or trials.
IMAGES_MUST_NOT_REACH = ("host", "runtimes", "sweeps", "experiments", "server", "cli")
# Outside the standard library, the image side imports only these ...
IMAGE_SIDE_PACKAGES = {"numpy", "gymnasium", "Pyro5"}
# ... and, inside functions, the packages of the benchmark it serves (present where it runs).
BENCHMARK_PACKAGES = {"dacbench", "ConfigSpace"}
# What runs inside agent images (the trainer, rl/) uses the client's side of the wire, and never
# reaches what obtains images or starts containers: their packages (requests, spython, tqdm)
# are not in agent images ...
AGENT_SIDE = ("rl",)
AGENT_MUST_NOT_REACH = ("images", "runtimes", "sweeps", "experiments", "cli", "server.serve",
                        "server.control")
# ... which hold, beyond the standard library, these (and, inside functions, the agent's own).
AGENT_SIDE_PACKAGES = IMAGE_SIDE_PACKAGES
AGENT_PACKAGES = {"stable_baselines3", "torch"}
# Optional dependencies, imported inside the functions that need them, never at module level.
OPTIONAL = {"matplotlib", "submitit", "pyarrow", "stable_baselines3", "torch", "dacbench",
            "ConfigSpace", "optuna", "cmaes", "smac"}
# gymnasium is optional inside images (the codec and the server run without it): there it may
# be imported inside functions too.
OPTIONAL_IN_IMAGES = OPTIONAL | {"gymnasium"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name imported (a package module, or a third-party top name)
    line: int
    in_function: bool
    type_checking: bool  # under `if TYPE_CHECKING:` (never executed)

    @property
    def internal(self) -> bool:
        return self.target == PACKAGE or self.target.startswith(PACKAGE + ".")


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package under `package_dir`."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(package_dir: Path) -> list[Import]:
    """Every import statement of the package, resolved to the module it imports."""
    known = modules(package_dir)
    found = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        for node, in_function, type_checking in _walk(tree.body, False, False):
            for target in _targets(node, package, known):
                found.append(Import(name, target, node.lineno, in_function, type_checking))
    return found


def _walk(body: list[ast.stmt], in_function: bool, type_checking: bool):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function, type_checking
            continue
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        checking = type_checking or (isinstance(node, ast.If) and _is_type_checking(node.test))
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if not children:
                continue
            # `else:` of an `if TYPE_CHECKING:` runs.
            flag = checking if field == "body" else type_checking
            yield from _walk(children, inside, flag)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name if alias.name.startswith(PACKAGE) else alias.name.split(".")[0]
                for alias in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if not module.startswith(PACKAGE):
        return [module.split(".")[0]]
    # `from package import submodule` imports the submodule; `from module import name` the module.
    submodules = [f"{module}.{alias.name}" for alias in node.names
                  if f"{module}.{alias.name}" in known]
    return submodules if len(submodules) == len(node.names) else [module, *submodules]


def _side(module: str) -> str:
    """The first part below the package: "server", "host", "errors", ... ("" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _parents(target: str, importer: str) -> list[str]:
    """The packages Python runs before `target` that `importer` is not itself inside of."""
    parts = target.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
            if not (importer == p or importer.startswith(p + "."))]


def graph(found: list[Import]) -> dict[str, set[str]]:
    """Module -> the package modules importing it runs (TYPE_CHECKING imports never run)."""
    edges: dict[str, set[str]] = {}
    for imp in found:
        edges.setdefault(imp.importer, set())
        if imp.internal and not imp.type_checking and imp.target != imp.importer:
            edges[imp.importer].add(imp.target)
            edges[imp.importer].update(_parents(imp.target, imp.importer))
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> dict[str, str]:
    """Module -> the module it was first reached from, for everything `start` imports."""
    seen = {start: ""}
    queue = [start]
    while queue:
        current = queue.pop(0)
        for nxt in sorted(edges.get(current, ())):
            if nxt not in seen:
                seen[nxt] = current
                queue.append(nxt)
    return seen


def _chain(seen: dict[str, str], end: str) -> str:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return " -> ".join(short(m) for m in reversed(chain))


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".") or PACKAGE


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def check(package_dir: Path) -> list[str]:
    """Every violation of the layout rules in the package at `package_dir`, one line each."""
    found = imports(package_dir)
    edges = graph(found)
    problems = []
    by_importer: dict[str, list[Import]] = {}
    for imp in found:
        by_importer.setdefault(imp.importer, []).append(imp)

    # 1. The image side, and every package module it imports, stays on the image side.
    image_closure: dict[str, str] = {}
    for module in sorted(edges):
        if _side(module) in IMAGE_SIDE:
            for reached, via in reachable(edges, module).items():
                image_closure.setdefault(reached, via)
    for module in sorted(image_closure):
        if _side(module) in HOST_SIDE:
            problems.append(f"image side reaches the host side: {_chain(image_closure, module)}")
        for imp in by_importer.get(module, []):
            if imp.internal or imp.type_checking or imp.target in sys.stdlib_module_names:
                continue
            allowed = IMAGE_SIDE_PACKAGES | (BENCHMARK_PACKAGES if imp.in_function else set())
            if imp.target not in allowed:
                problems.append(f"{short(module)}:{imp.line} imports {imp.target}, but it runs "
                                f"inside images (allowed: stdlib, {', '.join(sorted(allowed))})")

    # 2. agent images' side (rl/) reaches neither images/ nor runtimes/ (nor their packages).
    agent_closure: dict[str, str] = {}
    for module in sorted(edges):
        if _side(module) in AGENT_SIDE:
            for reached, via in reachable(edges, module).items():
                agent_closure.setdefault(reached, via)
    for module in sorted(agent_closure):
        if module.split(".", 1)[-1].startswith(AGENT_MUST_NOT_REACH):
            problems.append(f"agent side reaches {short(module)}: {_chain(agent_closure, module)}")
        for imp in by_importer.get(module, []):
            if imp.internal or imp.type_checking or imp.target in sys.stdlib_module_names:
                continue
            # Inside functions also the benchmark's packages: the wire restores their values
            # only where they are installed.
            in_function = AGENT_PACKAGES | BENCHMARK_PACKAGES
            allowed = AGENT_SIDE_PACKAGES | (in_function if imp.in_function else set())
            if imp.target not in allowed:
                problems.append(f"{short(module)}:{imp.line} imports {imp.target}, but it runs "
                                f"inside agent images (allowed: stdlib, {', '.join(sorted(allowed))})")

    # 3. images/ knows nothing of runtimes, episodes or trials.
    for module in sorted(edges):
        if _side(module) == "images":
            seen = reachable(edges, module)
            for reached in sorted(seen):
                if _side(reached) in IMAGES_MUST_NOT_REACH:
                    problems.append(f"images/ reaches {short(reached)}: {_chain(seen, reached)}")

    # 4. No import circles.
    for component in cycles(edges):
        problems.append(f"import circle among {', '.join(short(m) for m in component)}")

    # 5. Imports inside functions only for optional dependencies.
    for imp in found:
        if not imp.in_function:
            continue
        optional = OPTIONAL_IN_IMAGES if _side(imp.importer) in IMAGE_SIDE else OPTIONAL
        if imp.internal or imp.target not in optional:
            problems.append(f"{short(imp.importer)}:{imp.line} imports {short(imp.target)} inside "
                            "a function; import it at module level (only optional dependencies "
                            f"wait: {', '.join(sorted(optional))})")
    return sorted(set(problems))
