"""The plugin core: registration, validation, errors that name the culprit, listing."""

from __future__ import annotations

import json

import pytest

from augforge import Param, Strategy, hookimpl
from augforge.cli import main
from augforge.errors import UnknownStrategyError, UsageError
from augforge.plugins import get_registry, plugin_infos
from augforge.strategy import Composite


class Shift(Strategy):
    name = "test-shift"
    description = "Adds a constant to the image (test strategy)."
    params = (
        Param("amount", float, 0.1, "added value", low=-1.0, high=1.0),
        Param("mode", str, "add", choices=("add", "sub")),
    )

    def build_transform(self, seed):
        amount = self.p.amount if self.p.mode == "add" else -self.p.amount
        return lambda image, mask: (image + amount, mask)


class ShiftPlugin:
    @hookimpl
    def register_strategies(self, register):
        register(Shift)


class RaisingPlugin:
    @hookimpl
    def register_strategies(self, register):
        raise RuntimeError("boom")


class DuplicatePlugin:
    @hookimpl
    def register_strategies(self, register):
        class Other(Strategy):
            name = "none"
            description = "Pretends to be the baseline."

        register(Other)


class BadParamsPlugin:
    @hookimpl
    def register_strategies(self, register):
        class Bad(Strategy):
            name = "test-bad"
            description = "Declares a parameter whose default has the wrong type."
            params = (Param("p", float, "high"),)

        register(Bad)


def test_builtin_none_is_listed():
    registry = get_registry()
    assert "none" in registry.names()
    assert registry.entries["none"].plugin == "baseline"
    assert not registry.errors


def test_in_process_plugin_is_registered(register_plugin):
    with register_plugin(ShiftPlugin(), "test-shift-plugin"):
        registry = get_registry()
        assert registry.entries["test-shift"].plugin == "test-shift-plugin"
        s = registry.create("test-shift", {"test-shift": {"amount": "0.25"}})
        assert s.config == {"amount": 0.25, "mode": "add"}
        image, _ = s.build_transform(0)(1.0, None)
        assert image == pytest.approx(1.25)
    assert "test-shift" not in get_registry().names()


@pytest.mark.parametrize(
    "plugin, name, fragment",
    [
        (
            RaisingPlugin(),
            "test-raising",
            "plugin 'test-raising' raised while registering strategies: RuntimeError: boom",
        ),
        (DuplicatePlugin(), "test-duplicate", "registered by both plugin 'baseline' and plugin 'test-duplicate'"),
        (
            BadParamsPlugin(),
            "test-badparams",
            "plugin 'test-badparams': strategy 'test-bad': default of parameter 'p' is invalid",
        ),
    ],
)
def test_broken_plugin_is_reported_and_others_still_listed(register_plugin, capsys, plugin, name, fragment):
    with register_plugin(plugin, name), register_plugin(ShiftPlugin(), "test-shift-plugin"):
        registry = get_registry()
        assert any(fragment in str(e) for e in registry.errors), registry.errors
        assert {"none", "test-shift"} <= set(registry.names())
        assert main(["strategies", "--json"]) == 0
    out, err = capsys.readouterr()
    listed = {row["name"] for row in json.loads(out)}
    assert {"none", "test-shift"} <= listed
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and fragment in warnings[0]


def test_duplicate_keeps_first_registration(register_plugin):
    with register_plugin(DuplicatePlugin(), "test-duplicate"):
        registry = get_registry()
        assert registry.entries["none"].plugin == "baseline"


def test_misspelled_hook_is_rejected_at_registration():
    from augforge.plugins import PluginInfo, _load_errors, _register_module, pm

    class Misspelled:
        @hookimpl
        def register_strategy(self, register):  # missing the final "s"
            pass

    before = len(_load_errors)
    _register_module(Misspelled(), PluginInfo("test-misspelled", "test", "0", False))
    try:
        assert not pm.has_plugin("test-misspelled")
        assert "test-misspelled" in str(_load_errors[-1]) and "register_strategy" in str(_load_errors[-1])
    finally:
        del _load_errors[before:]


def test_unknown_strategy_lists_known_and_closest():
    registry = get_registry()
    with pytest.raises(UnknownStrategyError) as info:
        registry.create("nnoe")
    msg = str(info.value)
    assert "unknown strategy 'nnoe'" in msg and "did you mean 'none'?" in msg and "none" in msg.split("Known")[1]


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"amont": 0.1}, "strategy 'test-shift' has no parameter 'amont'"),
        ({"amount": "lots"}, "test-shift.amount: expected a number, got 'lots'"),
        ({"amount": True}, "test-shift.amount: expected a number"),
        ({"amount": 3.0}, "test-shift.amount: 3.0 is outside [-1, 1]"),
        ({"mode": "mul"}, "test-shift.mode: 'mul' is not one of add, sub"),
    ],
)
def test_parameter_validation_names_strategy_and_key(values, fragment):
    with pytest.raises(UsageError) as info:
        Shift(**values)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "cls_attrs, fragment",
    [
        ({"name": "Has Space", "description": "x"}, "must be lower-case"),
        ({"name": "a+b", "description": "x"}, "without '+'"),
        ({"name": "ok", "description": ""}, "has no description"),
        ({"name": "ok", "description": "x", "params": [Param("a", int, 1)]}, "must be a tuple"),
        ({"name": "ok", "description": "x", "params": (Param("a", list, []),)}, "use bool, int, float or str"),
        ({"name": "ok", "description": "x", "params": (Param("a", int, 1), Param("a", int, 2))}, "twice"),
    ],
)
def test_bad_declarations_are_refused(register_plugin, cls_attrs, fragment):
    cls = type("Declared", (Strategy,), dict(cls_attrs))

    class P:
        @hookimpl
        def register_strategies(self, register):
            register(cls)

    with register_plugin(P(), "test-declared"):
        errors = [str(e) for e in get_registry().errors]
    assert len(errors) == 1 and "plugin 'test-declared'" in errors[0] and fragment in errors[0]


def test_registering_a_non_strategy_is_refused(register_plugin):
    class P:
        @hookimpl
        def register_strategies(self, register):
            register(object)

    with register_plugin(P(), "test-object"):
        errors = [str(e) for e in get_registry().errors]
    assert errors == [
        "plugin 'test-object': registered <class 'object'>, which is not a subclass of augforge.Strategy; left out"
    ]


def test_composite_chains_transforms_and_records_parts(register_plugin):
    class Scale(Strategy):
        name = "test-scale"
        description = "Multiplies the image (test strategy)."
        params = (Param("factor", float, 2.0),)

        def build_transform(self, seed):
            return lambda image, mask: (image * self.p.factor, mask)

    class P:
        @hookimpl
        def register_strategies(self, register):
            register(Shift)
            register(Scale)

    with register_plugin(P(), "test-composite"):
        registry = get_registry()
        a = registry.create("test-shift+test-scale", {"test-scale": {"factor": "3"}})
        b = registry.create("test-scale+test-shift", {"test-scale": {"factor": "3"}})
    assert isinstance(a, Composite) and a.label == "test-shift+test-scale"
    assert a.build_transform(1)(1.0, None)[0] == pytest.approx((1.0 + 0.1) * 3)  # order matters
    assert b.build_transform(1)(1.0, None)[0] == pytest.approx(1.0 * 3 + 0.1)
    d = a.describe()
    assert [p["name"] for p in d["parts"]] == ["test-shift", "test-scale"]
    assert d["parts"][1]["params"] == {"factor": 3.0}
    assert a.key() != b.key()
    with pytest.raises(UsageError, match="names a part twice"):
        registry.create("test-shift+test-shift")
    with pytest.raises(UsageError, match="'none' cannot be part"):
        registry.create("test-shift+none")
    with pytest.raises(UsageError, match="empty part"):
        registry.create("test-shift+")


def test_plugins_listing_json(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    baseline = next(r for r in rows if r["name"] == "baseline")
    assert baseline["distribution"] == "augforge" and baseline["builtin"] is True
    assert baseline["hooks"] == ["register_strategies"]
    assert {i.name for i in plugin_infos()} >= {"baseline"}


def test_strategies_table_for_people(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "none" in out and "baseline" in out


def test_version(capsys):
    from augforge import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"augforge {__version__}"


def test_command_line_usage_errors_exit_non_zero(capsys):
    assert main(["strategies", "--bogus"]) == 2
    assert "No such option: --bogus" in capsys.readouterr().err


class ClashThenMorePlugin:
    """Registers a clashing name first, then a strategy of its own."""

    @hookimpl
    def register_strategies(self, register):
        class Clash(Strategy):
            name = "none"
            description = "Pretends to be the baseline."

        class Own(Strategy):
            name = "test-own-after-clash"
            description = "Registered after a clash (test strategy)."

        register(Clash)
        register(Own)


class HalfwayPlugin:
    """Registers one strategy, then raises."""

    @hookimpl
    def register_strategies(self, register):
        class Early(Strategy):
            name = "test-early"
            description = "Registered before the hook raised (test strategy)."

        register(Early)
        raise RuntimeError("boom after one")


def test_a_name_clash_drops_only_the_clashing_strategy(register_plugin):
    with register_plugin(ClashThenMorePlugin(), "test-clash-more"):
        registry = get_registry()
        assert registry.entries["none"].plugin == "baseline"
        assert registry.entries["test-own-after-clash"].plugin == "test-clash-more"
        assert any("registered by both" in str(e) for e in registry.errors)


def test_a_plugin_that_raises_registers_nothing_and_is_listed_as_failed(register_plugin, capsys):
    with register_plugin(HalfwayPlugin(), "test-halfway"):
        registry = get_registry()
        assert "test-early" not in registry.entries and "test-halfway" in registry.failed_plugins
        assert any("boom after one; its strategies test-early are left out" in str(e) for e in registry.errors)
        assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["test-halfway"]["status"] == "failed" and rows["baseline"]["status"] == "ok"


def test_load_plugins_filter_naming_nothing_installed_warns():
    from augforge.plugins import unknown_filter_names

    [warning] = unknown_filter_names({"augforge-gama"}, {"gamma", "augforge-gamma"})
    assert "AUGFORGE_LOAD_PLUGINS names 'augforge-gama', which is no installed augforge plugin" in str(warning)
    assert "did you mean 'augforge-gamma'?" in str(warning)
    [warning] = unknown_filter_names({"x"}, set())
    assert "no external plugin is installed" in str(warning)
    assert unknown_filter_names({"gamma"}, {"gamma"}) == [] and unknown_filter_names(None, set()) == []


def test_the_registry_is_rebuilt_for_each_new_plugin_under_a_reused_name(register_plugin):
    """The registry is built once and shared; a plugin registered under a name that another plugin
    had still gets its own registry (the cache holds and compares the plugin objects themselves: an
    id() alone can be passed on to a new object once the old one is freed)."""
    assert get_registry() is get_registry()  # built once

    class Named:
        def __init__(self, strategy):
            self.strategy = strategy

        @hookimpl
        def register_strategies(self, register):
            register(type("S", (Strategy,), {"name": self.strategy, "description": "x"}))

    for k in range(6):
        with register_plugin(Named(f"test-reused-{k}"), "test-reused"):
            assert f"test-reused-{k}" in get_registry().names()
        assert f"test-reused-{k}" not in get_registry().names()
