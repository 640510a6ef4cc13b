"""Layout figures of src/bandpo at a git ref: lines and code lines per layer, the largest modules, the
import graph.

    python scripts/layout_stats.py            # HEAD
    python scripts/layout_stats.py 6c45dde    # any commit, branch or tag

Reads the files from git (not the work tree), so two refs are compared without a checkout; needs only the
standard library and git.

Layers (by place in the tree): core = the top-level modules and band/ (pure-torch maths, no framework);
adapters = integrations/; application = training/, experiments/, cli/ and __main__.py. Floors, lowest first:
core < adapters < training < experiments < cli; an import from a module to one on a higher floor is an upward
import. Code lines are lines with a token that is not a comment, a docstring or layout (blank lines and
continuation-only lines are not code). Every ``import``/``from ... import`` of a bandpo module counts as an
edge, wherever it sits (lazy imports in functions and ``TYPE_CHECKING`` blocks included); a circle is a
strongly connected component of more than one module.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tokenize
from collections import defaultdict

ROOT = "src/bandpo"
PACKAGE = "bandpo"
FLOORS = ("core", "adapters", "training", "experiments", "cli")
LAYERS = {"core": ("core",), "adapters": ("adapters",), "application": ("training", "experiments", "cli")}
LAYOUT_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"layout_stats: git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def module_name(path: str) -> str:
    """src/bandpo/training/config.py -> bandpo.training.config; a package's __init__.py is the package."""
    parts = path[len("src/") : -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "integrations":
        return "adapters"
    if len(parts) > 1 and parts[1] in ("training", "experiments", "cli"):
        return parts[1]
    if module == f"{PACKAGE}.__main__":
        return "cli"
    return "core"


def layer_of(module: str) -> str:
    floor = floor_of(module)
    return next(layer for layer, floors in LAYERS.items() if floor in floors)


def docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the module's, classes' and functions' docstrings."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(source: str, tree: ast.AST) -> int:
    docs = docstring_lines(tree)
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in LAYOUT_TOKENS:
            continue
        if token.type == tokenize.STRING and token.start[0] in docs:
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docs)


def imported_modules(module: str, is_package: bool, tree: ast.AST, modules: set[str]) -> set[str]:
    """The bandpo modules `module` imports: ``from a.b import c`` is a.b.c when that is a module, else a.b."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import bandpo.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                components.append(sorted(component))
    return components


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", nargs="?", default="HEAD", help="git commit, branch or tag (default: HEAD)")
    args = parser.parse_args(argv)
    commit = git("rev-parse", "--short", f"{args.ref}^{{commit}}").strip()
    paths = [
        p for p in git("ls-tree", "-r", "--name-only", commit, "--", ROOT).splitlines() if p.endswith(".py")
    ]
    sources = {path: git("show", f"{commit}:{path}") for path in paths}
    modules = {module_name(path): path for path in paths}
    names = set(modules)

    stats: dict[str, tuple[int, int]] = {}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        source = sources[path]
        tree = ast.parse(source, filename=path)
        stats[module] = (len(source.splitlines()), code_lines(source, tree))
        graph[module] = imported_modules(module, path.endswith("__init__.py"), tree, names)

    print(f"src/bandpo at {args.ref} ({commit}): {len(modules)} modules")
    print()
    print(f"{'layer':<22}{'modules':>8}{'lines':>8}{'share':>7}{'code':>8}{'share':>7}")
    total_lines = sum(lines for lines, _ in stats.values())
    total_code = sum(code for _, code in stats.values())
    by_layer: dict[str, list[str]] = defaultdict(list)
    by_floor: dict[str, list[str]] = defaultdict(list)
    for module in modules:
        by_layer[layer_of(module)].append(module)
        by_floor[floor_of(module)].append(module)
    rows = [(layer, by_layer[layer]) for layer in LAYERS]
    rows += [(f"  {floor}", by_floor[floor]) for floor in LAYERS["application"]]
    for label, members in rows:
        lines = sum(stats[m][0] for m in members)
        code = sum(stats[m][1] for m in members)
        shares = f"{lines:>8}{lines / total_lines:>7.0%}{code:>8}{code / total_code:>7.0%}"
        print(f"{label:<22}{len(members):>8}{shares}")
    print(f"{'total':<22}{len(modules):>8}{total_lines:>8}{'':>7}{total_code:>8}")
    print()
    print("ten largest modules (lines, code lines):")
    for module in sorted(stats, key=lambda m: (-stats[m][0], m))[:10]:
        lines, code = stats[module]
        print(f"  {modules[module]:<48}{lines:>6}{code:>6}  {layer_of(module)}")
    over = [m for m in stats if stats[m][0] > 500]
    print(f"modules over 500 lines: {len(over)}")
    print()
    edges = [(a, b) for a, targets in graph.items() for b in targets]
    circles = [c for c in strongly_connected(graph) if len(c) > 1]
    upward = sorted((a, b) for a, b in edges if FLOORS.index(floor_of(b)) > FLOORS.index(floor_of(a)))
    print(
        f"import graph: {len(modules)} modules, {len(edges)} internal import edges, {len(circles)} circles, "
        f"{len(upward)} upward imports"
    )
    for circle in circles:
        print(f"  circle: {' <-> '.join(circle)}")
    for a, b in upward:
        print(f"  upward: {a} ({floor_of(a)}) -> {b} ({floor_of(b)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
