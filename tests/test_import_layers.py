"""The import graph of regionclip stays layered and acyclic (parsed with ast; no module is imported).

* Model code (``clip/``, ``regions.py``, ``detect/`` except ``detect/api.py``, ``pretrain/``, ``proposals/``)
  never imports ``data``, ``engine``, ``tasks``, ``commands`` or ``cli``.
* No command module imports another command module (``commands/_options.py``, the shared option
  definitions, is not a command).
* No import cycle among regionclip modules, counting the imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "regionclip"
MODEL_CODE = (
    "regionclip.clip",
    "regionclip.regions",
    "regionclip.detect",
    "regionclip.pretrain",
    "regionclip.proposals",
)
MODEL_EXCEPTIONS = ("regionclip.detect.api",)
UPPER_LAYERS = (
    "regionclip.data",
    "regionclip.engine",
    "regionclip.tasks",
    "regionclip.commands",
    "regionclip.cli",
)
# No cycle is allowed anywhere (the demo's old circle went when the demo became a package).
KNOWN_CYCLE_MODULES: set[str] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The regionclip modules that ``name`` imports anywhere in its body (functions included)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import regionclip.x.y` of an attribute: its module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_model_code_imports_no_upper_layer():
    bad = []
    for name, targets in _graph().items():
        if _within(name, MODEL_CODE) and not _within(name, MODEL_EXCEPTIONS):
            bad += [f"{name} -> {t}" for t in sorted(targets) if _within(t, UPPER_LAYERS)]
    assert not bad, "model code imports an upper layer:\n" + "\n".join(bad)


def test_no_command_module_imports_another():
    bad = []
    for name, targets in _graph().items():
        if name.startswith("regionclip.commands."):
            others = [
                t
                for t in targets
                if t.startswith("regionclip.commands.") and t != "regionclip.commands._options"
            ]
            bad += [f"{name} -> {t}" for t in sorted(others)]
    assert not bad, "command modules import each other:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = _graph()
    for name in KNOWN_CYCLE_MODULES:  # see KNOWN_CYCLE_MODULES
        graph[name] = {t for t in graph.get(name, set()) if t not in KNOWN_CYCLE_MODULES}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = _modules()
    assert "regionclip.detect.api" in _imports(
        "regionclip.tasks.evaluate", modules["regionclip.tasks.evaluate"], modules
    )
