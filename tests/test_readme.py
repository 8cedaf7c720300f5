"""The README's two commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .+?)\n```", (ROOT / "README.md").read_text())


def test_readme_has_the_two_commands():
    main_job, tests = _commands()
    assert main_job.endswith("augforge bench --strategy dcgan")
    assert tests.endswith("pytest")


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    _, tests = _commands()
    assert tests in ci.splitlines()
    assert ci.index("rm -rf .venv") < ci.index(tests)
