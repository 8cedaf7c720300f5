"""The example third-party plugin, installed for real (a wheel built by pip, its entry point seen)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "examples" / "augforge-gamma"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example into a private folder; subprocesses see it through PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert list(target.glob("augforge_gamma-*.dist-info")), "pip did not install a distribution"
    return target


def _augforge(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    if "AUGFORGE_LOAD_PLUGINS" not in env:
        full_env.pop("AUGFORGE_LOAD_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "augforge", *args],
        check=False,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


@pytest.mark.install
def test_installed_example_is_listed_with_its_distribution(installed):
    res = _augforge(installed, "strategies", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["random-gamma"]["plugin"] == "gamma_example"
    assert [p["name"] for p in rows["random-gamma"]["params"]] == ["low", "high", "p"]
    res = _augforge(installed, "plugins", "--json")
    plugin = next(r for r in json.loads(res.stdout) if r["name"] == "gamma_example")
    assert (plugin["distribution"], plugin["version"], plugin["builtin"]) == ("augforge-gamma", "0.1.0", False)


@pytest.mark.install
def test_installed_example_is_usable(installed):
    code = (
        "import numpy as np\n"
        "from augforge.plugins import get_registry\n"
        "s = get_registry().create('random-gamma', {'random-gamma': {'p': '1.0', 'low': '0.5', 'high': '1.0'}})\n"
        "img = np.linspace(0.1, 0.9, 64, dtype=np.float32).reshape(8, 8)\n"
        "mask = (img > 0.5).astype(np.uint8)\n"
        "out, m = s.build_transform(3)(img, mask)\n"
        "assert out.dtype == np.float32 and (out >= img).all() and (out != img).any()\n"
        "assert (m == mask).all()\n"
        "print('ok', s.describe()['transform'])\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(installed)},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok {'random_gamma'")


@pytest.mark.install
def test_external_plugins_can_be_switched_off(installed):
    res = _augforge(installed, "strategies", "--json", AUGFORGE_LOAD_PLUGINS="")
    names = {r["name"] for r in json.loads(res.stdout)}
    assert "none" in names and "random-gamma" not in names
    res = _augforge(installed, "strategies", "--json", AUGFORGE_LOAD_PLUGINS="augforge-gamma")
    assert "random-gamma" in {r["name"] for r in json.loads(res.stdout)}


@pytest.mark.install
def test_hook_tracing_switch(installed):
    res = _augforge(installed, "strategies", "--json", AUGFORGE_TRACE_PLUGINS="1")
    assert "calling gamma_example.register_strategies" in res.stderr
