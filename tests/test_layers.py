"""The package's layers point one way: a module imports only from its own layer's folder or below,
never from above, not even inside a function. And answering `lmstack --help` imports no torch.

    0 ground     errors, home, device, inputs, formats (the smallest pieces; they may use each other)
    1 core       model, tokenizer            (neither imports the other)
    2 engines    peft, registry, generate    (none imports another)
    3 hub        catalog, pull, resolve, load and export model references
    4 stages     data, train, eval, quant, merge, interp, serve, rag, agents, security, ...
    5 top        api, cli, and every stage's cli.py (the command line is the top of each stage)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lmstack"

LAYERS = {
    "errors": 0, "home": 0, "device": 0, "inputs": 0, "formats": 0, "sandbox": 0, "arithmetic": 0, "lazy": 0,
    "model": 1, "tokenizer": 1,
    "peft": 2, "registry": 2, "generate": 2,
    "hub": 3,
    "api": 5, "cli": 5,
}
STAGE_LAYER = 4  # every other folder is a stage


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # `lmstack` itself: its __init__ is the top's lazy `load`
        return 5
    if parts[-1] in ("cli", "repl_cli"):
        return 5
    return LAYERS.get(parts[1], STAGE_LAYER)


def top_folder(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported lmstack module, line) for every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lmstack":  # `from lmstack import registry` imports lmstack.registry
                found += [(f"lmstack.{alias.name}", node.lineno) for alias in node.names]
            elif node.module.startswith("lmstack."):
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "lmstack"]
    return found


def modules() -> list[tuple[str, Path]]:
    result = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        result.append((name, path))
    return result


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_down(module: str, path: Path):
    own_layer, own_folder = layer_of(module), top_folder(module)
    wrong = []
    for target, line in imports(path):
        if target == "lmstack" and own_layer < 5:
            wrong.append(f"line {line}: imports the top-level package `lmstack` (use the stage's own modules)")
            continue
        target_layer, target_folder = layer_of(target), top_folder(target)
        same_folder = target_folder == own_folder
        sideways = target_layer == own_layer and own_layer in (1, 2) and not same_folder
        if target_layer > own_layer or sideways:
            wrong.append(f"line {line}: {module} (layer {own_layer}) imports {target} (layer {target_layer})")
    assert not wrong, "\n".join(wrong)


def test_the_command_line_answers_help_without_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom lmstack.cli import app\n"
            "for args in ([], ['--help'], ['train', '--help'], ['eval', '--help'], ['generate', '--nope']):\n"
            "    CliRunner().invoke(app, args)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
