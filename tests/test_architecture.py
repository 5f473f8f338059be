"""The house rules, checked on the source: layers import only downwards, no cycles, small modules,
output only from the command line.

Layers, bottom up (README, "Architecture"): the protocol cores (``notedfu.protocol``) and the shared
leaves (errors, checksums, specs, ports, …); the links and clients (``notedfu.notecard``,
``notedfu.target``); the agent (``notedfu.update``); the command line (``notedfu.cli*``, ``demo``,
``bench*``). The simulators (``notedfu.sim``) stand beside the clients and are reached only through
ports (``notedfu.ports`` names their package; pyserial and the I2C opener import it by scheme).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "notedfu"
CLI = ("notedfu.cli", "notedfu.cli_card", "notedfu.cli_common", "notedfu.cli_render", "notedfu.cli_target",
       "notedfu.cli_update", "notedfu.cli_gang",
       "notedfu.demo", "notedfu.bench", "notedfu.bench_flash", "notedfu.bench_update", "notedfu.__main__")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every notedfu module ``path`` imports, at the top or inside a function (a lazy import is still one)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("notedfu")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("notedfu"):
            known = modules()
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in known}
    return names


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_clients_and_protocol_cores_import_nothing_above_them_nor_the_simulators():
    forbidden = ("notedfu.update", "notedfu.sim", *CLI)
    wrong = {f"{name} imports {target}" for name, path in modules().items()
             if within(name, "notedfu.notecard", "notedfu.target", "notedfu.protocol")
             for target in imports(path) if within(target, *forbidden)}
    assert not wrong, sorted(wrong)


def test_protocol_cores_are_sans_io():
    io = ("serial", "smbus2", "socket", "subprocess", "time", "threading", "os")
    wrong = []
    for name, path in modules().items():
        if not within(name, "notedfu.protocol"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wrong += [f"{name} imports {a.name}" for a in node.names if a.name.split(".")[0] in io]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in io or (node.module.startswith("notedfu")
                                                       and not within(node.module, "notedfu.protocol",
                                                                      "notedfu.errors", "notedfu.checksums")):
                    wrong.append(f"{name} imports {node.module}")
    assert not wrong, wrong


def test_the_simulators_import_no_client():
    forbidden = ("notedfu.notecard", "notedfu.target", "notedfu.update", *CLI)
    wrong = {f"{name} imports {target}" for name, path in modules().items() if within(name, "notedfu.sim")
             for target in imports(path) if within(target, *forbidden)}
    assert not wrong, sorted(wrong)


def test_there_are_no_import_cycles():
    known = modules()
    graph = {name: {t for t in imports(path) if t in known and t != name} for name, path in known.items()}
    # A package's __init__ is imported with any of its modules: not an edge back up.
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert not cycles, cycles


def test_no_module_is_longer_than_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_only_the_command_line_prints():
    printing = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.add(name)
    assert printing <= set(CLI), sorted(printing - set(CLI))


def test_renderers_for_people_live_in_the_command_line():
    """Events only observe: the stages emit them, and how they look (rich) is the command line's choice."""
    rendering = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(module == "rich" or module.startswith("rich.") for module in imported):
                rendering.add(name)
    assert rendering and rendering <= set(CLI), sorted(rendering - set(CLI))
