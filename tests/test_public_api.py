"""The built-in plugins use the public API only, so a third-party plugin can do all they do.

The public API is ``augforge``'s own names plus the ``__all__`` of each module in
``augforge.PUBLIC_MODULES``. Every import of augforge in ``plugins/`` (at the top of a module or
inside a function) must name a public module and only names in its ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import augforge

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _augforge_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for each import of augforge or one of its modules in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "augforge" or node.module.startswith("augforge."):
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("augforge.") or alias.name == "augforge":
                    found.append((node.lineno, alias.name, []))
    return found


def test_every_public_name_exists():
    for module in augforge.PUBLIC_MODULES:
        mod = importlib.import_module(module)
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"{module}.__all__ names {missing}, which the module does not define"


def test_the_plugins_import_only_public_names():
    files = sorted(PLUGINS.rglob("*.py"))
    assert len(files) >= 6 and any(f.name == "dcgan.py" for f in files)
    public = {m: set(importlib.import_module(m).__all__) for m in augforge.PUBLIC_MODULES}
    problems = []
    for path in files:
        for line, module, names in _augforge_imports(path):
            where = f"{path.relative_to(PLUGINS.parent)}:{line}"
            if module not in public:
                problems.append(f"{where} imports the internal module {module}")
                continue
            problems += [
                f"{where} imports {module}.{n}, which is not in its __all__"
                for n in names
                if n not in public[module] and f"{module}.{n}" not in public
            ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from augforge.synthesis.paste import CANVAS_TRIES\n", "augforge.synthesis.paste"),
        ("def f():\n    from augforge.plugins import pm\n", "augforge.plugins"),
        ("import augforge.data.records\n", "augforge.data.records"),
    ],
)
def test_the_check_sees_internal_imports_anywhere(tmp_path, source, expected):
    path = tmp_path / "p.py"
    path.write_text(source)
    modules = [m for _, m, _ in _augforge_imports(path)]
    assert modules == [expected] and expected not in augforge.PUBLIC_MODULES
