"""What a measurement depends on: the source that ``run`` reaches, and nothing else.

An experiment file holds both sides: ``Config`` and ``run`` measure (the chosen
profile's config values enter the runner's key beside this digest); ``summarize``
and ``plot`` derive and draw at build time. The cache key of a result must
change when the measuring code changes, and must not change when a page, a
figure, a derived ratio or another profile does, so a GPU result survives every
later edit of the pages.

So the key hashes the *reach* of the measuring roots: starting from ``run`` and
``Config``, every top-level statement of the file whose names they use
(functions, classes, constants, imports), followed into ``experiments.*``
modules by the names imported from them. Each reached
statement is hashed as its syntax tree without docstrings, so comments,
docstrings and formatting never rerun an experiment. Files under
``experiments/data`` are data, hashed whole.

Standard library only (the runner imports this, and it must not import torch).
"""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

# ``PROFILES`` is not a root: the runner's key holds the chosen profile's own config values, so adding or
# resizing another profile (a GPU one, say) leaves every other profile's results current. ``TIMEOUT_S``
# limits a run; it measures nothing.
MEASURING_ROOTS = ("run", "Config")
ALL = "*"  # reach every statement of a module (``from experiments.lib import formulas``)


@dataclass
class _Stmt:
    node: ast.stmt
    defines: set[str]
    uses: set[str]


@dataclass
class Reach:
    """The statements reached in each module (by file), in source order."""

    statements: dict[Path, list[ast.stmt]] = field(default_factory=dict)
    modules: set[str] = field(default_factory=set)  # every project module whose tree was reached
    external: set[str] = field(default_factory=set)  # top-level packages imported from outside it

    def digest(self, root: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(self.statements):
            h.update(path.relative_to(root).as_posix().encode())
            for node in self.statements[path]:
                h.update(ast.dump(_without_docstrings(node), include_attributes=False).encode())
        return h.hexdigest()


def _without_docstrings(node: ast.AST) -> ast.AST:
    node = _copy(node)
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = sub.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                sub.body = body[1:] or [ast.Pass()]
    return node


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node)).body[0] if isinstance(node, ast.stmt) else node


def _defines(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _uses(node: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root`` (None when it is not the project's own)."""
    parts = name.split(".")
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(nodes: list[ast.stmt], module: str) -> list[tuple[str, set[str]]]:
    """``(module, names)`` that ``nodes`` import from anywhere (nested imports included)."""
    package = module.rsplit(".", 1)[0]
    out: list[tuple[str, set[str]]] = []
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                out += [(a.name, {ALL}) for a in sub.names]
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - sub.level + 1] + ([base] if base else []))
                for a in sub.names:
                    # ``from pkg import sub`` imports a module when pkg/sub.py exists; else a name of pkg
                    out.append((f"{base}.{a.name}", {ALL}))
                    out.append((base, {a.name}))
    return out


def reach(module: str, roots: tuple[str, ...] | set[str], root: Path, prefix: str = "experiments") -> Reach:
    """Every statement of the project's modules that ``roots`` of ``module`` depend on."""
    result = Reach()
    wanted: dict[str, set[str]] = {}
    todo: list[tuple[str, set[str]]] = [(module, set(roots))]
    parsed: dict[str, list[_Stmt]] = {}
    while todo:
        name, names = todo.pop()
        if not (name == prefix or name.startswith(prefix + ".")):
            result.external.add(name.split(".")[0])
            continue
        path = module_file(name, root)
        if path is None:
            continue
        seen = wanted.setdefault(name, set())
        if names <= seen:
            continue
        seen |= names
        if name not in parsed:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            parsed[name] = [_Stmt(n, _defines(n), _uses(n)) for n in tree.body
                            if not _is_main_guard(n) and not _is_docstring(n)]
        stmts = parsed[name]
        chosen = _close(stmts, seen)
        result.statements[path] = [s.node for s in stmts if id(s) in chosen]
        result.modules.add(name)
        todo += _imports(result.statements[path], name)
    return result


def _close(stmts: list[_Stmt], names: set[str]) -> set[int]:
    """The statements that define ``names`` and, transitively, what those use."""
    if ALL in names:
        return {id(s) for s in stmts}
    chosen: set[int] = set()
    # statements that define nothing (module-level calls) always run on import: keep them
    frontier = set(names) | {n for s in stmts if not s.defines for n in s.uses}
    chosen |= {id(s) for s in stmts if not s.defines}
    done: set[str] = set()
    while frontier:
        name = frontier.pop()
        if name in done:
            continue
        done.add(name)
        for s in stmts:
            if name in s.defines and id(s) not in chosen:
                chosen.add(id(s))
                frontier |= s.uses - done
    return chosen


def data_files(root: Path) -> list[Path]:
    data = root / "experiments" / "data"
    return sorted(p for p in data.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if data.is_dir() else []


def measurement_digest(experiment: str, root: Path) -> str:
    """The hash of everything ``experiments/<experiment>.py``'s measurement depends on."""
    found = reach(f"experiments.{experiment}", MEASURING_ROOTS, root)
    h = hashlib.sha256(found.digest(root).encode())
    for p in data_files(root):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()
