"""The plugin manager and the strategy registry.

Built-in strategy plugins (the modules of the ``augforge_plugins`` package, shipped from ``plugins/``)
and third-party plugins (entry-point group ``augforge``) are loaded the same way, through the
``register_strategies`` hook. A plugin that fails to import, to register, or that registers an
invalid or duplicate strategy is reported with its name and left out; the others still load.

Environment switches:
    AUGFORGE_LOAD_PLUGINS   unset: load every installed plugin; "" (empty): no external plugins;
                            "a,b": only the named external plugins (entry-point or distribution names).
    AUGFORGE_TRACE_PLUGINS  set to 1: print every hook call and its result to stderr.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from augforge import hookspecs
from augforge.errors import PluginError, UnknownStrategyError, UsageError
from augforge.strategy import Composite, Strategy, check_strategy_class

ENTRY_POINT_GROUP = "augforge"
BUILTIN_PACKAGE = "augforge_plugins"

pm = pluggy.PluginManager("augforge")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)


_plugin_info: dict[str, PluginInfo] = {}
_load_errors: list[PluginError] = []
_loaded = False


def _register_module(module: Any, info: PluginInfo) -> None:
    try:
        pm.register(module, name=info.name)
        pm.check_pending()
    except Exception as exc:  # noqa: BLE001 -- a misspelled hook, a bad signature: report, keep the others
        if pm.is_registered(module):
            pm.unregister(module)
        _load_errors.append(PluginError(f"plugin {info.name!r} ({info.distribution}): {exc}"))
        return
    info.hooks = sorted(h.name for h in (pm.get_hookcallers(module) or []))
    _plugin_info[info.name] = info


def _external_filter() -> set[str] | None:
    raw = os.environ.get("AUGFORGE_LOAD_PLUGINS")
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


def unknown_filter_names(wanted: set[str] | None, known: set[str]) -> list[PluginError]:
    """One warning per name in AUGFORGE_LOAD_PLUGINS that matches no installed plugin (entry point
    or distribution name): a typo there would otherwise load nothing, silently."""
    out = []
    for name in sorted((wanted or set()) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else (f"; installed: {', '.join(sorted(known))}" if known else "; no external plugin is installed")
        )
        out.append(PluginError(f"AUGFORGE_LOAD_PLUGINS names {name!r}, which is no installed augforge plugin{hint}"))
    return out


def load_plugins() -> None:
    """Register the built-in and the installed plugins once (later calls do nothing)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    if os.environ.get("AUGFORGE_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()

    from augforge import __version__

    builtin = importlib.import_module(BUILTIN_PACKAGE)
    for mod in sorted(pkgutil.iter_modules(builtin.__path__), key=lambda m: m.name):
        if mod.name.startswith("_") or mod.name == "examples":
            continue
        name = f"{BUILTIN_PACKAGE}.{mod.name}"
        info = PluginInfo(name=mod.name, distribution="augforge", version=__version__, builtin=True)
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 -- a broken plugin must not stop the others
            _load_errors.append(PluginError(f"built-in plugin {mod.name!r} failed to import: {exc}"))
            continue
        _register_module(module, info)

    wanted = _external_filter()
    installed = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    known = {ep.name for ep in installed} | {ep.dist.name for ep in installed if ep.dist is not None}
    _load_errors.extend(unknown_filter_names(wanted, known))
    for ep in installed:
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if wanted is not None and ep.name not in wanted and dist not in wanted:
            continue
        if ep.name in _plugin_info:
            _load_errors.append(
                PluginError(f"plugin {ep.name!r} ({dist}) has the same name as an already loaded plugin; skipped")
            )
            continue
        info = PluginInfo(name=ep.name, distribution=dist, version=version, builtin=False)
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 -- a broken plugin must not stop the others
            _load_errors.append(PluginError(f"plugin {ep.name!r} ({dist}) failed to import: {exc}"))
            continue
        _register_module(module, info)


def plugin_infos() -> list[PluginInfo]:
    load_plugins()
    out = []
    for name, plugin in pm.list_name_plugin():
        info = _plugin_info.get(name)
        if info is None:  # registered directly, e.g. by a test
            info = PluginInfo(name=name, distribution="(registered in process)", version="", builtin=False)
        info.hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        out.append(info)
    return out


def _source_digest(cls: type) -> str:
    """12 hex digits of sha256 over the file that defines ``cls`` ("" when it has none)."""
    try:
        path = inspect.getsourcefile(cls)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12] if path else ""
    except (OSError, TypeError):
        return ""


def strategy_provenance(strategy: Strategy) -> dict[str, dict[str, str]]:
    """Where each part of ``strategy`` comes from: ``{part: {plugin, distribution, version, code}}``,
    ``code`` a digest of the file defining the part's class. Trials record it; a resume compares it
    (:func:`provenance_changes`), so that a plugin upgraded or edited since is not silently reused."""
    registry = get_registry()
    parts = strategy.parts if isinstance(strategy, Composite) else [strategy]
    out = {}
    for part in parts:
        entry = registry.entries.get(part.name)
        plugin = entry.plugin if entry else ""
        info = _plugin_info.get(plugin)
        out[part.name] = {
            "plugin": plugin,
            "distribution": info.distribution if info else "(registered in process)",
            "version": info.version if info else "",
            "code": _source_digest(type(part)),
        }
    return out


def provenance_changes(recorded: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> list[str]:
    """``["dcgan: version 1.0 -> 1.1", "flip: code 3f2a.. -> 9c1b.."]`` for parts whose plugin differs
    (nothing for parts a record does not describe: records written before provenance existed)."""
    changes = []
    for part, now in current.items():
        then = recorded.get(part)
        if not then:
            continue
        for field_ in ("plugin", "distribution", "version", "code"):
            if then.get(field_) != now.get(field_):
                changes.append(f"{part}: {field_} {then.get(field_) or '?'} -> {now.get(field_) or '?'}")
                break
    return changes


@dataclass
class StrategyEntry:
    cls: type[Strategy]
    plugin: str

    @property
    def name(self) -> str:
        return self.cls.name


class StrategyRegistry:
    """All registered strategies, which plugin registered each, and the problems met on the way."""

    def __init__(self) -> None:
        self.entries: dict[str, StrategyEntry] = {}
        self.errors: list[PluginError] = []
        self.failed_plugins: set[str] = set()  # plugins whose hook raised: none of their strategies loaded

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> type[Strategy]:
        try:
            return self.entries[name].cls
        except KeyError:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownStrategyError(
                f"unknown strategy {name!r}{hint} Known strategies: {', '.join(known)} (see `augforge strategies`)"
            ) from None

    def create(self, spec: str, params: dict[str, dict[str, Any]] | None = None) -> Strategy:
        """Build a strategy from ``name`` or ``a+b+c``; ``params`` maps a part's name to its values."""
        params = params or {}
        names = [n.strip() for n in spec.split("+")]
        if any(not n for n in names):
            raise UsageError(f"strategy {spec!r}: empty part; write names joined by '+', e.g. dcgan+affine")
        parts = [self.get(n)(**params.get(n, {})) for n in names]
        return parts[0] if len(parts) == 1 else Composite(parts)


def _call_register_hook(registry: StrategyRegistry) -> None:
    """Call every plugin's hook. A strategy that is invalid or whose name is taken is left out alone
    (the plugin's other strategies still register); a plugin whose hook raises registers nothing at
    all (what it registered before raising is dropped) and is marked failed."""
    for impl in pm.hook.register_strategies.get_hookimpls():
        plugin = impl.plugin_name
        pending: dict[str, StrategyEntry] = {}

        def register(cls: Any, _plugin: str = plugin, _pending: dict[str, StrategyEntry] = pending) -> None:
            problem = check_strategy_class(cls)
            if problem:
                registry.errors.append(PluginError(f"plugin {_plugin!r}: {problem}; left out"))
                return
            existing = registry.entries.get(cls.name) or _pending.get(cls.name)
            if existing is not None:
                registry.errors.append(
                    PluginError(
                        f"strategy {cls.name!r} is registered by both plugin {existing.plugin!r} and "
                        f"plugin {_plugin!r}; the one from {existing.plugin!r} is kept"
                    )
                )
                return
            _pending[cls.name] = StrategyEntry(cls=cls, plugin=_plugin)

        kwargs = {"register": register}
        if os.environ.get("AUGFORGE_TRACE_PLUGINS"):
            sys.stderr.write(f"augforge: calling {plugin}.register_strategies\n")
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except Exception as exc:  # noqa: BLE001 -- reported with the plugin named
            registry.failed_plugins.add(plugin)
            dropped = f"; its strategies {', '.join(sorted(pending))} are left out" if pending else ""
            registry.errors.append(
                PluginError(
                    f"plugin {plugin!r} raised while registering strategies: {type(exc).__name__}: {exc}{dropped}"
                )
            )
            continue
        registry.entries.update(pending)


#: The registry last built, and the registered plugins it was built from.
_built: tuple[tuple[object, ...], StrategyRegistry] | None = None


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Same load-error count and the same (name, plugin object) pairs, in order."""
    if len(a) != len(b) or a[0] != b[0]:
        return False
    return all(x[0] == y[0] and x[1] is y[1] for x, y in zip(a[1:], b[1:]))  # type: ignore[index]


def get_registry() -> StrategyRegistry:
    """Every loaded plugin's strategies. Built once and shared; registering or unregistering a plugin
    (tests do, in-process) builds it anew on the next call."""
    global _built
    load_plugins()
    # The plugin objects themselves, compared by identity: the key holds them, so a plugin that was
    # unregistered cannot be freed and its id() reused by a new one.
    plugins = (len(_load_errors), *pm.list_name_plugin())
    if _built is not None and _same(_built[0], plugins):
        return _built[1]
    registry = StrategyRegistry()
    registry.errors.extend(_load_errors)
    _call_register_hook(registry)
    _built = (plugins, registry)
    return registry
