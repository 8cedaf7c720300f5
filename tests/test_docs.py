"""The plugin guide documents every hook with its exact signature."""

from __future__ import annotations

import inspect
from pathlib import Path

from augforge import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _hooks():
    return [getattr(hookspecs, name) for name in hookspecs.__all__ if name not in {"hookimpl", "hookspec"}]


def test_every_hook_is_a_hookspec():
    hooks = _hooks()
    assert hooks, "no hooks found"
    for fn in hooks:
        assert hasattr(fn, "augforge_spec"), f"{fn.__name__} is in __all__ but is not a hookspec"
        assert fn.__doc__, f"hook {fn.__name__} has no docstring"


def test_every_hook_is_documented_with_its_exact_signature():
    text = (DOCS / "plugins.md").read_text()
    for fn in _hooks():
        # annotations are strings (postponed evaluation): the text as written in hookspecs.py
        sig = str(inspect.signature(fn)).replace("'", "")
        assert f"{fn.__name__}{sig}" in text, f"docs/plugins.md lacks `{fn.__name__}{sig}`"
