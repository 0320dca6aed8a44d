"""The package's shape, pinned: one home per concept, imports pointing one way (README, Development).

Read from the source with `ast` (what Python would import at run time: module-level and in-function imports,
not those under `if TYPE_CHECKING:`), and checked once for real: `jueying --help` in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "jueying_cli"

# Top to bottom: a module may import its own package and anything in a lower row, never a higher row or a
# sibling in its own row (siblings would grow into cycles).
LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"drills", "audit", "exporter"},
    {"actions"},
    {"render"},
    {"checks", "status", "collect"},
    {"scheduler"},
    {"transport", "store", "probe"},
    {"facts"},
    {"inventory"},
    {"outcome", "yamlfile"},
    {"vocab", "errors"},
]
PROBE_MAY_IMPORT = {"jueying_cli.facts", "jueying_cli.facts.schema", "jueying_cli"}
# Third-party modules with a weight or a risk, and the one place each may be imported.
HEAVY = {
    "paramiko": "jueying_cli.transport.ssh",  # a package: config, known_hosts, certs, hostkeys, keys, client..
    "pynvml": "jueying_cli.probe.nvml",
    "psutil": "jueying_cli.probe.host",
    "rich": "jueying_cli.render.terminal",
    "yaml": "jueying_cli.yamlfile",
    "sqlite3": "jueying_cli.store",  # the store package (db.py once split)
    "typer": "jueying_cli.cli",
    "prometheus_client": "jueying_cli.exporter.metrics",
}
HELP_MUST_NOT_LOAD = ("paramiko", "pynvml", "psutil", "rich", "yaml", "sqlite3", "ClusterShell", "prometheus_client")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path) -> set[str]:
    """Every module the file imports at run time, as absolute names. `from a import b` counts a.b when b is a
    module (see package_modules), else a."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}:{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def package_modules() -> dict[str, set[str]]:
    """{module: the modules it imports}. Importing a module also runs its parent packages' __init__: that is
    Python's doing, not an edge of ours, so a module's own ancestors are left out."""
    raw = {module_name(p): runtime_imports(p) for p in PACKAGE.rglob("*.py")}
    known = set(raw)

    def resolve(name: str) -> str:
        base, _, alias = name.partition(":")
        return f"{base}.{alias}" if alias and f"{base}.{alias}" in known else base

    modules = {}
    for module, imports in raw.items():
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        modules[module] = {resolve(i) for i in imports} - ancestors - {module}
    return modules


def home(module: str) -> str:
    """The layer key of a module: its first package under jueying_cli (or the top-level module's name)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) if home(module) in names), None)


MODULES = package_modules()


def test_every_module_has_a_layer() -> None:
    homeless = sorted(m for m in MODULES if m != "jueying_cli" and home(m) != "probe" and layer_of(m) is None)
    assert homeless == [], "add these to LAYERS (and to the README's drawing)"


def test_imports_point_down() -> None:
    wrong = []
    for module, imports in sorted(MODULES.items()):
        mine = layer_of(module)
        if mine is None:
            continue
        for target in sorted(i for i in imports if i.startswith("jueying_cli.")):
            theirs = layer_of(target)
            if home(target) == home(module) or target == "jueying_cli":
                continue
            if theirs is None or theirs <= mine:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_nothing_outside_cli_imports_cli() -> None:
    assert [(m, i) for m, imports in MODULES.items() for i in imports
            if i.startswith("jueying_cli.cli") and home(m) not in ("cli", "__main__")] == []


def test_no_import_cycles() -> None:
    graph = {m: {i for i in imports if i in MODULES and i != m} for m, imports in MODULES.items()}
    # a package's __init__ is imported with every module in it: that edge is not a cycle of ours
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == []


def test_the_probe_imports_only_the_facts_schema_and_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names)
    allowed_third_party = {"jueying_cli.probe.nvml": {"pynvml"}, "jueying_cli.probe.host": {"psutil"}}
    wrong = []
    for module, imports in MODULES.items():
        if home(module) != "probe":
            continue
        for target in imports:
            top = target.split(".")[0]
            if target.startswith("jueying_cli"):
                if home(target) != "probe" and target not in PROBE_MAY_IMPORT:
                    wrong.append(f"{module} -> {target}")
            elif top not in stdlib and top not in allowed_third_party.get(module, set()) and top != "__future__":
                wrong.append(f"{module} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("dependency", sorted(HEAVY))
def test_each_heavy_dependency_has_one_home(dependency: str) -> None:
    where = sorted(m for m, imports in MODULES.items()
                   if any(i == dependency or i.startswith(dependency + ".") for i in imports))
    allowed = HEAVY[dependency]
    assert where, f"{dependency} is imported nowhere: update HEAVY"
    assert [m for m in where if m != allowed and not m.startswith(allowed + ".")] == []


def test_help_loads_no_heavy_dependency() -> None:
    code = ("import sys, io, contextlib\nfrom jueying_cli.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    rc = main(['--help'])\n"
            "import json\nprint(json.dumps([rc, sorted(m for m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=True)
    rc, loaded = json.loads(proc.stdout)
    assert rc == 0
    assert [m for m in loaded if m.split(".")[0] in HELP_MUST_NOT_LOAD] == []
