"""The paste-in base (augforge.synthesis.pastein): the built-in strategies on it make what they made
before, slice for slice, and a third-party generator written on it (docs/plugins.md) works end to end."""

from __future__ import annotations

import importlib.util
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from augforge import PrepareContext
from augforge.config import get_preset
from augforge.data.sources import load_dataset
from augforge.plugins import StrategyRegistry, get_registry
from augforge.synthesis import GeneratorStrategy

ROOT = Path(__file__).resolve().parent.parent
DIGESTS = Path(__file__).parent / "data" / "paste-in-digests.json"


def _digest_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("paste_in_digests", DIGESTS.with_name("paste_in_digests.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_built_in_paste_in_strategies_make_the_same_slices_as_before():
    """dcgan, dcgan-paper and copy-paste (HU and 8-bit, with and without healthy canvases): the same
    synthetic slices, patches and facts as the digests recorded before they moved onto the base
    (kept per CPU capability: trained generators' weights round differently on AVX2 and AVX512)."""
    module = _digest_module()
    kept = json.loads(DIGESTS.read_text())
    if module.env() not in kept:
        pytest.skip(f"digests kept for {sorted(kept)}; this is {module.env()}")
    assert module.digests() == kept[module.env()]


def test_the_kept_digest_sets_differ_only_in_trained_weights():
    """What does not pass through a trained network (copy-paste) and the facts of every case (how
    many slices, what the strategy reports) are the same on every CPU."""
    sets = list(json.loads(DIGESTS.read_text()).values())
    assert len(sets) >= 1
    for other in sets[1:]:
        assert other.keys() == sets[0].keys()
        for case, first in sets[0].items():
            assert (other[case]["added"], other[case]["info"]) == (first["added"], first["info"]), case
            if case.startswith("copy-paste"):
                assert other[case] == first, case


@pytest.fixture
def registry(register_plugin) -> StrategyRegistry:
    """The registry with the example generator of docs/plugins.md registered as a plugin, as written there."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    code = re.search(r"<!-- example: generator -->\n```python\n(.*?)```", text, re.S).group(1)
    module = types.ModuleType("mean_tumour_example")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    assert issubclass(module.MeanTumour, GeneratorStrategy)
    with register_plugin(module, "mean-tumour-example"):
        yield get_registry()


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(get_preset("tiny").data, progress=False)


def _ctx(tiny, cache: Path, *, seed: int = 0, healthy: bool = True, logs: list[str] | None = None) -> PrepareContext:
    return PrepareContext(
        seed=seed,
        healthy=tiny.healthy if healthy else [],
        preset=get_preset("tiny"),
        cache_dir=cache,
        log=(logs.append if logs is not None else lambda _m: None),
        progress=False,
        dataset_fingerprint=tiny.fingerprint,
    )


def test_a_third_party_generator_on_the_base_adds_labelled_slices(tiny, tmp_path, registry):
    strategy = registry.create("mean-tumour", {"mean-tumour": {"ratio": 0.5}})
    train = list(tiny.train)
    out = strategy.prepare(train, _ctx(tiny, tmp_path))
    added = out[len(train) :]
    assert out[: len(train)] == train and len(added) == round(0.5 * len(train))
    canvases = {s.id for s in tiny.healthy}
    for s in added:
        assert s.source == "synthetic:mean-tumour" and s.image is None
        assert s.provenance["strategy"] == "mean-tumour" and s.provenance["canvas"] in canvases
        assert s.mask.any() and s.label != "LR1"  # a measured nodule, classed
        canvas = next(c for c in tiny.healthy if c.id == s.provenance["canvas"])
        changed = s.hu != canvas.hu
        assert changed.any() and not changed[s.mask == 0].all()  # the tumour went in, the rest stayed


def test_the_base_caches_the_fit_by_what_changes_it(tiny, tmp_path, registry):
    logs: list[str] = []
    first = registry.create("mean-tumour").generate(list(tiny.train), _ctx(tiny, tmp_path, logs=logs), 4)
    again = registry.create("mean-tumour").generate(list(tiny.train), _ctx(tiny, tmp_path, seed=5, logs=logs), 4)
    assert first.info["cache_hit"] is False and again.info["cache_hit"] is True
    assert first.info["generator"] == again.info["generator"]
    assert any("reusing generator" in m for m in logs)
    # A setting that fit_facts names keys a new fit; fewer training tumours do too.
    other = registry.create("mean-tumour", {"mean-tumour": {"noise": 0.3}})
    assert other.generate(list(tiny.train), _ctx(tiny, tmp_path), 4).info["cache_hit"] is False
    fewer = registry.create("mean-tumour").generate(list(tiny.train)[:6], _ctx(tiny, tmp_path), 4)
    assert fewer.info["generator"] != first.info["generator"]
    # A damaged cached fit is fitted again, not trusted.
    (path,) = tmp_path.glob(f"mean-tumour-{first.info['generator']}/generator.pt")
    path.write_bytes(b"not a generator")
    logs.clear()
    redo = registry.create("mean-tumour").generate(list(tiny.train), _ctx(tiny, tmp_path, logs=logs), 4)
    assert redo.info["cache_hit"] is False and any("cannot be used" in m for m in logs)
    assert np.array_equal(redo.patches_hu, first.patches_hu)  # same fit, same seed, same samples


def test_every_generator_fit_runs_with_deterministic_algorithms(tiny, tmp_path, registry, monkeypatch):
    # On a GPU a fit without them gives another generator each run (measured: benchmarks/gpu/); the
    # base turns them on around any generator's fit, a third-party one's too, and restores the setting.
    import torch

    strategy = registry.create("mean-tumour")
    seen: list[bool] = []
    fit = type(strategy).fit_generator

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(type(strategy), "fit_generator", spy)
    before = torch.are_deterministic_algorithms_enabled()
    strategy.generate(list(tiny.train), _ctx(tiny, tmp_path), 4)
    assert seen == [True] and torch.are_deterministic_algorithms_enabled() == before


def test_without_healthy_slices_the_base_pastes_into_training_slices(tiny, tmp_path, registry):
    logs: list[str] = []
    made = registry.create("mean-tumour").generate(list(tiny.train), _ctx(tiny, tmp_path, healthy=False, logs=logs), 6)
    train = {s.id: s for s in tiny.train}
    assert made.slices and all(s.provenance["canvas"] in train for s in made.slices)
    for s in made.slices:  # clear of the tumour the canvas has: the old mask is kept, the new one apart
        old = train[s.provenance["canvas"]].mask
        assert (s.mask >= old).all() and s.mask.sum() > old.sum()
    assert any("no healthy slices" in m for m in logs)
