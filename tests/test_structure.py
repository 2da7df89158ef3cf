"""The package's shape (docs/design.md): one-way arrows between rooms, no import circle, small files.

The import graph is read from the source with ``ast`` (imports inside functions included, since a
lazy import is still an arrow), so these tests need no torch and run in well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vlmrl"
REPO = SRC.parents[1]

#: The rooms, lowest first (docs/design.md): a room imports only rooms ranked at or below it.
#: ``config.schema`` (the typed tree's dataclasses) is a leaf every room may import for its spec.
RANK = {
    "errors": -1,
    "algos": 0,
    "data": 1,
    "models": 2,
    "rewards": 3,
    "envs": 4,
    "config": 5,
    "rollout": 6,
    "run": 7,
    "vision": 8,
    "eval": 9,
    "train": 10,
    "gen": 11,
    "experiments": 12,
    "cli": 13,
    "demo": 13,
    "__main__": 13,
    "__init__": 13,
}
SHARED_LEAVES = {"vlmrl.config.schema"}
MAX_LINES = 400
MAX_TRAIN_MODULES = 6


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports anywhere in its body (``from a import b``: ``a.b`` if a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vlmrl")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlmrl"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            out |= subs or {node.module}
    return {m for m in out if m in modules}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, mods) - {m} for m, p in mods.items()}


def test_arrows_point_down_the_rooms():
    """No room imports a room above it (so models/, eval/, rollout/, data/ never import train/)."""
    bad = []
    for mod, targets in _graph().items():
        for t in targets:
            if t in SHARED_LEAVES:
                continue
            if RANK[_room(t)] > RANK[_room(mod)]:
                bad.append(f"{mod} -> {t}")
    assert bad == [], "imports that run up the rooms: " + ", ".join(sorted(bad))


def test_no_room_below_train_imports_train():
    below = [r for r, k in RANK.items() if k < RANK["train"]]
    offenders = [
        f"{m} -> {t}" for m, ts in _graph().items() for t in ts if _room(m) in below and _room(t) == "train"
    ]
    assert offenders == []


def test_no_import_circle():
    """Tarjan's strongly connected components of the module graph: every one is a single module."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_train_is_the_loop_only():
    modules = sorted(p.name for p in (SRC / "train").glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= MAX_TRAIN_MODULES, modules


def test_no_source_file_over_the_limit():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_nothing_points_outside_the_project():
    """Source, bench scripts and the README cite the project's own docs, never a file users lack."""
    files = [*SRC.rglob("*.py"), *(REPO / "bench").glob("*.py"), REPO / "README.md"]
    hits = [
        f"{p.relative_to(REPO)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "shared/" in line
    ]
    assert hits == []
