"""The package's layers, read from its source (AST: nothing is imported or run).

Ranks, lowest first: the root's ``errors``, ``util`` and ``kernels``; ``replay``; ``learn``;
``pipeline``; ``run`` and ``integrations``; ``tools``. A module may import its own rank or
lower ones, never a higher one; only the tools layer (and ``python -m fastdqn``) reaches the
tools; the replay layer never imports torch at module level; and no modules import each
other in a circle. Each rule is shown to fail on a scratch copy of the package with one
violating import added.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RANKS = {"errors": 0, "util": 0, "kernels": 0, "replay": 1, "learn": 2, "pipeline": 3, "run": 4,
         "integrations": 4, "tools": 5, "__main__": 6, "__init__": 6}


def modules(package: Path, kernels: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of fastdqn (``kernels/`` installs as fastdqn.kernels)."""
    found = {}
    for base, prefix in ((package, "fastdqn"), (kernels, "fastdqn.kernels")):
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            name = ".".join((prefix,) + parts)
            found[name.removesuffix(".__init__") if parts[-1] == "__init__" else name] = path
    return found


def imports(path: Path, name: str, known: set) -> list[tuple[str, int, bool]]:
    """(imported fastdqn module or 'torch', line, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in ast.walk(tree) if _module_level(tree, node)}
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
            # "from fastdqn.replay import buffer" imports the module fastdqn.replay.buffer.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "torch" or target.startswith("torch."):
                out.append(("torch", node.lineno, id(node) in top))
            elif target.startswith("fastdqn"):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                out.append((target, node.lineno, id(node) in top))
    return out


def _module_level(tree: ast.Module, node: ast.AST) -> bool:
    """Whether ``node`` runs when the module is imported: not inside a function or class body."""
    stack = list(tree.body)
    while stack:
        current = stack.pop()
        if current is node:
            return True
        if isinstance(current, (ast.If, ast.Try)):
            stack.extend(current.body + current.orelse + getattr(current, "finalbody", []))
            for handler in getattr(current, "handlers", []):
                stack.extend(handler.body)
    return False


def rank(name: str) -> int:
    parts = name.split(".")
    return RANKS["__init__"] if len(parts) == 1 else RANKS[parts[1]]


def violations(package: Path, kernels: Path) -> list[str]:
    found = modules(package, kernels)
    graph: dict[str, set[str]] = {}
    problems = []
    for name, path in sorted(found.items()):
        graph[name] = set()
        for target, line, top in imports(path, name, set(found)):
            where = f"{path.relative_to(path.parents[2])}:{line}"
            if target == "torch":
                if top and rank(name) == RANKS["replay"]:
                    problems.append(f"{where}: the replay layer imports torch at module level")
                continue
            if target == name or target == "fastdqn":
                continue
            graph[name].add(target)
            if rank(target) > rank(name):
                problems.append(f"{where}: {name} imports {target}, a higher layer")
    problems += [f"import circle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_package_keeps_its_layers():
    assert violations(ROOT / "fastdqn", ROOT / "kernels") == []


@pytest.mark.parametrize("module,line,expected", [
    ("replay/spec.py", "import torch", "the replay layer imports torch at module level"),
    ("learn/losses.py", "from fastdqn.run import config", "imports fastdqn.run.config, a higher layer"),
    ("run/logger.py", "import fastdqn.tools.stats", "imports fastdqn.tools.stats, a higher layer"),
    ("util/atomic.py", "from fastdqn.util import phases", "import circle: fastdqn.util.atomic -> fastdqn.util.phases"),
])
def test_each_rule_fails_on_a_violating_import(tmp_path, module, line, expected):
    scratch = tmp_path / "fastdqn"
    shutil.copytree(ROOT / "fastdqn", scratch, ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    target = scratch / module
    target.write_text(f"{target.read_text()}\n{line}\n")
    if "circle" in expected:  # the other half of the circle
        other = scratch / "util/phases.py"
        other.write_text(f"{other.read_text()}\nimport fastdqn.util.atomic\n")
    found = violations(scratch, tmp_path / "kernels")
    assert any(expected in problem for problem in found), found
