"""Hybrids: composition order, what a trial records, validation, and the named hybrids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from augforge import Param, PrepareContext, Strategy, hookimpl
from augforge.bench.trial import make_trial
from augforge.config import get_preset
from augforge.data.records import Slice
from augforge.errors import UsageError
from augforge.plugins import get_registry
from augforge.strategy import Composite


def blank(sid: str) -> Slice:
    z = np.zeros((8, 8), np.float32)
    return Slice(
        id=sid,
        hu=z,
        lung_hu=z,
        mask=np.zeros((8, 8), np.uint8),
        label="LR1",
        spacing_mm=1.0,
        patient=sid,
        source="synthetic:test",
    )


class _Step:
    """An online transform that records its own application: image -> image * mul + add."""

    def __init__(self, add: float, mul: float):
        self.add, self.mul = add, mul

    def __call__(self, image, mask):
        return image * self.mul + self.add, mask

    def to_dict(self):
        return {"add": self.add, "mul": self.mul}


def tagging(name: str, add: float, mul: float) -> type[Strategy]:
    """A strategy that appends a slice named after itself and transforms by (x * mul + add)."""

    class Tag(Strategy):
        params = (Param("k", int, 1, "slices to add", low=0, high=5),)

        def prepare(self, train, ctx):
            seen = ",".join(s.id for s in train)
            return list(train) + [blank(f"{self.name}{j}<{seen}>") for j in range(self.config["k"])]

        def build_transform(self, seed):
            return _Step(add, mul)

    Tag.name, Tag.description = name, f"test strategy {name}"
    return Tag


class Tags:
    @hookimpl
    def register_strategies(self, register):
        register(tagging("tag-a", add=1.0, mul=1.0))
        register(tagging("tag-b", add=0.0, mul=2.0))


@pytest.fixture
def registry(register_plugin):
    with register_plugin(Tags(), "test-tags"):
        yield get_registry()


def ctx() -> PrepareContext:
    return PrepareContext(
        seed=0,
        healthy=[],
        preset=get_preset("tiny"),
        cache_dir=Path("/nonexistent"),
        log=lambda m: None,
        progress=False,
    )


def test_offline_steps_chain_in_the_order_written(registry):
    out = registry.create("tag-a+tag-b").prepare([blank("r")], ctx())
    assert [s.id for s in out] == ["r", "tag-a0<r>", "tag-b0<r,tag-a0<r>>"]  # b saw a's slice
    out = registry.create("tag-b+tag-a").prepare([blank("r")], ctx())
    assert [s.id for s in out] == ["r", "tag-b0<r>", "tag-a0<r,tag-b0<r>>"]


def test_online_transforms_compose_in_the_order_written(registry):
    image, mask = np.full((4, 4), 3.0, np.float32), np.zeros((4, 4), np.uint8)
    ab = registry.create("tag-a+tag-b").build_transform(0)(image, mask)[0]
    ba = registry.create("tag-b+tag-a").build_transform(0)(image, mask)[0]
    assert ab[0, 0] == (3 + 1) * 2 and ba[0, 0] == 3 * 2 + 1


def test_the_trial_records_every_part_with_its_parameters(registry):
    strategy = registry.create("tag-a+tag-b", {"tag-b": {"k": 3}})
    assert strategy.describe() == {
        "name": "tag-a+tag-b",
        "parts": [
            {"name": "tag-a", "params": {"k": 1}, "transform": {"add": 1.0, "mul": 1.0}},
            {"name": "tag-b", "params": {"k": 3}, "transform": {"add": 0.0, "mul": 2.0}},
        ],
    }
    trial = make_trial(
        strategy,
        "tag-a+tag-b",
        {"tag-b": {"k": 3}},
        get_preset("tiny"),
        seed=0,
        train_fraction=1.0,
        dataset_fingerprint="f",
    )
    assert trial.config["strategy"] == "tag-a+tag-b"
    assert trial.config["strategy_spec"]["parts"][1]["params"] == {"k": 3}
    # A different part parameter or a different order is a different trial.
    other = registry.create("tag-a+tag-b", {"tag-b": {"k": 2}})
    swapped = registry.create("tag-b+tag-a", {"tag-b": {"k": 3}})
    assert len({strategy.key(), other.key(), swapped.key()}) == 3


@pytest.mark.parametrize(
    "spec,params,message",
    [
        ("tag-a+tag-a", None, "names a part twice"),
        ("none+tag-a", None, "'none' cannot be part of a composite"),
        ("tag-a+", None, "empty part"),
        ("tag-a+tag-c", None, "unknown strategy 'tag-c'; did you mean"),
        ("tag-a+tag-b", {"tag-b": {"kk": 1}}, "strategy 'tag-b' has no parameter 'kk'"),
        ("tag-a+tag-b", {"tag-a": {"k": 9}}, r"tag-a.k: 9 is outside \[0, 5\] \(slices to add\)"),
    ],
)
def test_composition_errors_are_one_line(registry, spec, params, message):
    with pytest.raises(UsageError, match=message) as err:
        registry.create(spec, params)
    assert "\n" not in str(err.value)


def test_third_party_strategies_compose_with_built_ins(registry):
    strategy = registry.create("tag-a+affine")
    assert isinstance(strategy, Composite) and strategy.label == "tag-a+affine"
    assert strategy.has_prepare and not strategy.needs_gpu


# -- named hybrids ----------------------------------------------------------------------------------


def named_hybrids(registry) -> list[type]:
    return [e.cls for e in registry.entries.values() if getattr(e.cls, "recipe", None)]


def test_named_hybrids_are_registered_with_a_recipe_and_a_description():
    registry = get_registry()
    names = {cls.name: cls for cls in named_hybrids(registry)}
    assert {"gan-affine", "paste-affine"} <= set(names)
    assert names["gan-affine"].recipe == ("dcgan", "affine")
    for cls in names.values():
        assert registry.entries[cls.name].plugin == "hybrid"
        assert "+".join(cls.recipe) in cls.description
        parts = [registry.get(p)() for p in cls.recipe]
        assert cls.needs_gpu == any(p.needs_gpu for p in parts), cls.name


def test_a_named_hybrid_is_its_composition():
    registry = get_registry()
    named, spelled = registry.create("gan-affine"), registry.create("dcgan+affine")
    assert isinstance(named, Composite) and named.label == named.name == "gan-affine"
    assert named.composition == "dcgan+affine" and named.has_prepare
    d = named.describe()
    assert d["name"] == "gan-affine" and d["composition"] == "dcgan+affine"
    assert d["parts"] == spelled.describe()["parts"]
    # The same draws as the spelled-out composition, seed for seed.
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    mask = (rng.random((32, 32)) > 0.7).astype(np.uint8)
    for seed in (0, 1):
        a = named.build_transform(seed)(image.copy(), mask.copy())
        b = spelled.build_transform(seed)(image.copy(), mask.copy())
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_named_hybrid_takes_no_parameters_and_says_where_they_go():
    with pytest.raises(UsageError, match="no parameter 'ratio'.*write the composition 'dcgan\\+affine'"):
        get_registry().create("gan-affine", {"gan-affine": {"ratio": 2}})


def test_a_named_hybrid_names_a_missing_part(register_plugin):
    from augforge_plugins.hybrid import NamedHybrid

    class Orphan(NamedHybrid):
        name = "orphan-hybrid"
        description = "tag-z+affine: a hybrid whose first part is not registered."
        recipe = ("tag-z", "affine")

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            register(Orphan)

    missing = "'orphan-hybrid' needs strategy 'tag-z', which is not registered"
    with register_plugin(Plugin(), "test-orphan"), pytest.raises(UsageError, match=missing):
        get_registry().create("orphan-hybrid")


def test_paste_affine_runs_both_halves():
    from augforge.data.sources import load_dataset

    tiny = load_dataset(get_preset("tiny").data, progress=False)
    strategy = get_registry().create("paste-affine")
    c = PrepareContext(
        seed=0,
        healthy=tiny.healthy,
        preset=get_preset("tiny"),
        cache_dir=Path("/nonexistent"),
        log=lambda m: None,
        progress=False,
    )
    out = strategy.prepare(tiny.train, c)
    assert sum(s.source == "synthetic:copy-paste" for s in out) == len(tiny.train)
    assert strategy.build_transform(0) is not None
