"""Imports point downward (ARCHITECTURE.md): no module of llmcls imports a command module (one that `commands.py`
maps a command name to), and no command imports another. The dispatchers (cli, commands, benchmark*) and the
`__main__` blocks that hand a script over to the CLI are the exceptions."""

from __future__ import annotations

import ast
from pathlib import Path

from llmcls.commands import COMMANDS

PACKAGE = Path(__file__).resolve().parents[1] / "llmcls"
DISPATCHERS = ("llmcls.cli", "llmcls.commands", "llmcls.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module the file imports (at the top, in functions, under TYPE_CHECKING), not counting `__main__`
    blocks; `from llmcls import x` counts as llmcls.x."""
    found: set[str] = set()
    skipped = {id(node) for top in tree.body if is_main_block(top) for node in ast.walk(top)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def upward_imports() -> set[tuple[str, str]]:
    commands = {target.partition(":")[0] for target, _ in COMMANDS.values()}
    problems = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name in DISPATCHERS or name.rpartition(".")[2].startswith("benchmark"):
            continue
        for imported in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            if imported in commands and imported != name:
                problems.add((name, imported))
    return problems


def test_no_module_imports_a_command_module():
    problems = upward_imports()
    assert not problems, "imports of command modules: " + ", ".join(f"{a} -> {b}" for a, b in sorted(problems))


def test_the_checker_sees_every_kind_of_import():
    tree = ast.parse("import llmcls.sft\nfrom llmcls import encoder\nfrom typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from llmcls.generative import x\n"
                     "def f():\n    from llmcls.report import y\n"
                     "if __name__ == '__main__':\n    from llmcls.cli import main\n")
    found = imported_modules(tree)
    assert {"llmcls.sft", "llmcls.encoder", "llmcls.generative", "llmcls.report"} <= found
    assert "llmcls.cli" not in found
