"""The import graph of models/, read from the source: one-way, and one home for layer names.

Imports inside functions count as much as those at the top of a module: a lazy import
still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "effv2_keras.models"
MODELS = Path(__file__).resolve().parents[2] / "effv2_keras" / "models"
MODULES = {f"{PACKAGE}.{path.stem}": path for path in MODELS.glob("*.py") if path.stem != "__init__"}


def parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def imported_modules(module: str) -> set:
    """Modules of models/ that ``module`` imports anywhere in its body (package __init__ left out)."""
    found = set()
    for node in ast.walk(parse(module)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(PACKAGE.split(".")[: len(PACKAGE.split(".")) - node.level + 1] + [base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found & set(MODULES)


def names_taken_from(module: str, source: str) -> set:
    return {alias.name for node in ast.walk(parse(module)) if isinstance(node, ast.ImportFrom)
            and node.module == source for alias in node.names}


def reachable_from(module: str) -> set:
    seen, todo = set(), [module]
    while todo:
        for target in imported_modules(todo.pop()) - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_builder_never_reaches_the_weight_importers():
    assert f"{PACKAGE}.weights" not in reachable_from(f"{PACKAGE}.builder")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_of_models_imports_itself_back(module):
    assert module not in reachable_from(module), f"{module} is on an import circle"


@pytest.mark.parametrize("module", ["builder", "weights"])
def test_block_names_come_from_the_naming_module(module):
    assert "block_prefix" in names_taken_from(f"{PACKAGE}.{module}", f"{PACKAGE}.naming")


@pytest.mark.parametrize("module", sorted(set(MODULES) - {f"{PACKAGE}.naming"}))
def test_no_other_module_spells_out_a_block_or_head_name(module):
    for node in ast.walk(parse(module)):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            assert not (isinstance(first, ast.Constant) and str(first.value).startswith("block")), (
                f"{module} line {node.lineno} builds a block name itself: use naming.block_prefix")
        if isinstance(node, ast.Constant):
            assert node.value != "predictions", f"{module} line {node.lineno}: use naming.HEAD"
