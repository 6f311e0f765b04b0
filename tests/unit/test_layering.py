"""core/ is pure: no I/O, clock or randomness imports; layers import downward only."""

import ast
from pathlib import Path

import braid

ROOT = Path(braid.__file__).parent
FORBIDDEN_IN_CORE = {"socket", "asyncio", "os", "time", "random", "select", "subprocess", "fcntl",
                     "secrets", "threading"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_nothing_impure():
    for path in (ROOT / "core").glob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in FORBIDDEN_IN_CORE
               or n.startswith(("braid.io", "braid.daemon", "braid.control", "braid.cli", "braid.lab"))}
        assert not bad, f"{path.name} imports {bad}"


def test_io_does_not_import_daemon_or_cli():
    for path in (ROOT / "io").glob("*.py"):
        bad = {n for n in _imports(path) if n.startswith(("braid.daemon", "braid.cli", "braid.lab"))}
        assert not bad, f"{path.name} imports {bad}"
