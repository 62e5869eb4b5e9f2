"""Rooms a newcomer can find: layers that import only downwards, small files and functions, a README layout that matches."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = ("lib", "ml_assets", "resources", "sensors", "feature_repo")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("resources", ("ml_assets", "sensors")), ("lib", ("dagster", "ml_assets", "resources", "sensors"))],
)
def test_layers_import_only_downwards(folder: str, forbidden: tuple[str, ...]) -> None:
    """lib/ is framework-free and shared; resources/ build on lib/ only; ml_assets/ and sensors/ wire them."""
    found = [
        f"{path.relative_to(REPO)}: {module}"
        for path in _sources(folder)
        for module in _imported(path)
        if module.split(".")[0] in forbidden
    ]
    assert found == []


def test_no_production_file_over_500_lines_and_no_function_over_80() -> None:
    long_files, long_functions = [], []
    for path in _sources(*PRODUCTION):
        text = path.read_text()
        if text.count("\n") > 500:
            long_files.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert long_files == [] and long_functions == []


def test_tests_mirror_the_code() -> None:
    tests = REPO / "ml_assets_tests"
    assert sorted(p.name for p in tests.glob("test_*.py")) == []  # every test lives in the folder of what it tests
    folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"lib", "assets", "resources", "sensors", "service", "system"}


def test_the_readme_layout_names_every_folder_and_every_stage() -> None:
    readme = (REPO / "README.md").read_text()
    layout = re.search(r"## Layout\n\n```\n(.*?)```", readme, re.DOTALL)
    assert layout, "README has a Layout section with the tree in a code block"
    tree = layout.group(1)
    top = [
        p.name
        for p in REPO.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (any(p.rglob("*.py")) or p.name in ("docs", "deploy"))
    ]
    folders = [*top, *(p.name for p in (REPO / "ml_assets").iterdir() if p.is_dir() and (p / "__init__.py").exists())]
    missing = [f for f in folders if f"{f}/" not in tree and f != "__pycache__"]
    stages = [p.stem for p in (REPO / "ml_assets" / "assets").glob("*.py") if p.stem != "__init__"]
    modules = [p.stem for p in (REPO / "ml_assets").glob("*.py") if p.stem != "__init__"]
    lib = [p.stem for p in (REPO / "lib").glob("*.py") if p.stem != "__init__"]
    named = re.findall(r"[a-z_0-9]+", tree)
    assert missing == [] and [n for n in [*stages, *modules, *lib] if n not in named] == []
