"""Project rules that code review would otherwise have to remember."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_streamlit_or_pages(path):
    assert not {"streamlit", "pages", "app"} & _imports(path)


def test_core_never_prints():
    for path in (ROOT / "core").rglob("*.py"):
        if path.name == "cli.py":  # the command line's own output
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "print"]
        assert not calls, f"{path.relative_to(ROOT)} prints; log instead"


def test_methods_never_import_the_trainer():
    for path in (ROOT / "core" / "methods").glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.startswith("core.train") for m in modules), path.name
