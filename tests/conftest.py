"""Shared test set-up: an isolated cache, and registering plugins in-process without installing them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from augforge.plugins import pm


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test session gets its own cache folder, built once and shared by the tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUGFORGE_CACHE", str(tmp_path_factory.mktemp("augforge-cache")))
    yield
    mp.undo()


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[object]:
    """Register ``plugin`` (an object with ``@hookimpl`` methods) for the duration of the block."""
    pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        pm.unregister(name=name)


@pytest.fixture
def register_plugin():
    """``with register_plugin(obj, "name"):`` registers an in-process plugin for one block."""
    return registered
