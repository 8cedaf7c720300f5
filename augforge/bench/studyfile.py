"""Study files: a comparative study written down as TOML, run with ``augforge bench --study FILE``.

A study file names the strategies (each with its parameters, per part for a hybrid, and optionally
its own train fractions for a learning curve), the seeds, the preset and its overrides, the data and
the executor. docs/studies.md describes the format; ``benchmarks/studies/`` holds the shipped ones.

Everything is checked before anything runs, and every problem is one :class:`UsageError` line that
names the file and the key: :func:`load_study` checks the file's structure and types (and the preset
overrides), :meth:`StudySpec.validate` what needs the registry and the file system (strategies and
their parameters, the data source, the executor) and expands ``all``.

Paths in a study file (``data``, ``out``) are relative to the current directory, like the command-line
options they stand for.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augforge.config import PRESETS, SECTIONS, Preset, apply_overrides, get_preset
from augforge.errors import UsageError
from augforge.settings import Param, check_keys, describe
from augforge.strategy import BASELINE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from augforge.bench.trial import Trial
    from augforge.plugins import StrategyRegistry

__all__ = ["ALL", "StudyEntry", "StudyRun", "StudySpec", "expand_all", "flags_study", "load_study", "plan_trials"]

#: The strategy name that stands for every registered strategy except the baseline.
ALL = "all"

_STUDY_KEYS = (
    "preset",
    "data",
    "seeds",
    "train_fractions",
    "executor",
    "executor_options",
    "set",
    "baseline",
    "out",
    "allow_pickle",
)
_ENTRY_KEYS = ("name", "params", "train_fractions", "label")
#: The typed keys of the [study] table (strings that must not be empty are read by _string).
_STUDY_PARAMS = {
    p.name: p
    for p in (
        Param("preset", str, "quick", choices=tuple(PRESETS)),
        Param("seeds", int, 1, low=1, high=10_000),
        Param("baseline", bool, True),
    )
}
_WORKERS = Param("workers", int, 0, low=0)
#: A label is shown in tables and file names: short, printable, no quotes or separators.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,39}")


@dataclass
class StudyEntry:
    """One ``[[strategy]]`` of a study file.

    strategy:        ``"affine"``, ``"dcgan+affine"`` (normalised: no spaces), or ``"all"`` before
                     :meth:`StudySpec.validate` expands it.
    params:          part name -> parameter values, the form ``registry.create`` takes.
    train_fractions: this entry's fractions, overriding the study's (a learning curve); None: the study's.
    label:           the name the strategy is ranked under, when it is not the strategy's own (two
                     entries of one strategy with different parameters need one).
    where:           where the entry is in the file, for messages (``[[strategy]] #3 (flip)``).
    """

    strategy: str
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_fractions: list[float] | None = None
    label: str | None = None
    where: str = field(default="", compare=False)

    @property
    def parts(self) -> list[str]:
        return self.strategy.split("+")

    @property
    def display(self) -> str:
        """What the leaderboard calls this entry."""
        return self.label or self.strategy


@dataclass(frozen=True)
class StudyRun:
    """One strategy of a resolved study with the train fractions it runs at (see :meth:`StudySpec.runs`)."""

    strategy: str
    params: dict[str, dict[str, Any]]
    train_fractions: tuple[float, ...]
    label: str | None = None


@dataclass
class StudySpec:
    """A parsed study file. ``set`` holds preset overrides (``"train.epochs"`` -> ``15`` from a file,
    ``"15"`` from ``--set``; the preset's sections convert both); ``executor_options`` the executor's
    settings (``workers`` and e.g. ``ray_address``)."""

    entries: list[StudyEntry]
    seeds: int = 1
    train_fractions: list[float] = field(default_factory=lambda: [1.0])
    preset: str = "quick"
    data: str = "lidc-phantom"
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    baseline: bool = True
    out: str | None = None
    allow_pickle: bool = False
    path: Path | None = None
    #: Fields replaced by command-line options (see :meth:`override`): messages name the option.
    from_cli: frozenset[str] = frozenset()
    #: Made from ``--strategy`` flags, not read from a file (:func:`flags_study`): messages say no file.
    from_flags: bool = False

    # -- messages ------------------------------------------------------------------------------
    def where(self, key: str) -> str:
        """How a message names the setting ``key``: ``--data`` or ``FILE: study.data``."""
        if key in self.from_cli:
            return "--" + key.replace("_", "-")
        return f"{self.path or '<study>'}: study.{key}"

    def setting(self, key: str) -> str:
        """A setting and its value for messages: ``--data '/x'`` or ``FILE: study.data = '/x'``."""
        value = getattr(self, key)
        if key in self.from_cli:
            return f"{self.where(key)} {value!r}"
        return f"{self.where(key)} = {value!r}"

    def _entry_error(self, entry: StudyEntry, message: str) -> UsageError:
        if self.from_flags:
            return UsageError(message)
        return UsageError(f"{self.path or '<study>'}: {entry.where}: {message}")

    # -- command-line options on top of the file ---------------------------------------------------
    def override(self, **values: Any) -> StudySpec:
        """A copy with some fields replaced by command-line options (``data="/path"``,
        ``allow_pickle=True``, ``seeds=5``, ``set={...}`` merged over the file's); None values are
        ignored. Messages about a replaced field name the option, not the file."""
        changes = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"StudySpec.override: no field {unknown[0]!r}")
        if "set" in changes:
            changes["set"] = {**self.set, **changes["set"]}
        return dataclasses.replace(self, **changes, from_cli=self.from_cli | set(changes))

    # -- what needs the registry and the file system ----------------------------------------------
    def validate(self, registry: StrategyRegistry | None = None) -> StudySpec:
        """Expand ``all``, then check every strategy and its parameters against ``registry`` (default:
        every loaded plugin), the data source and the executor. Returns self (expanded in place).

        Raises UsageError naming the file and the key of the first problem.
        """
        if registry is None:
            from augforge.plugins import get_registry

            registry = get_registry()
        self._expand(registry)
        self._check_unique()
        for entry in self.entries:
            try:
                registry.create(entry.strategy, entry.params)
            except UsageError as exc:
                raise self._entry_error(entry, str(exc)) from None
            if entry.label is not None and entry.label != entry.strategy and entry.label in registry.entries:
                raise self._entry_error(
                    entry, f"label {entry.label!r} is the name of another strategy; choose a label no strategy has"
                )
        self._check_data()
        self._check_executor()
        self.build_preset()
        return self

    def _expand(self, registry: StrategyRegistry) -> None:
        """Replace an ``all`` entry by one entry per registered strategy (except ``none``) that no
        other entry names: an explicit entry gives that strategy its parameters or learning curve."""
        alls = [e for e in self.entries if e.strategy == ALL]
        if len(alls) > 1:
            raise self._entry_error(alls[1], "'all' is listed twice")
        if not alls:
            return
        named = {e.strategy for e in self.entries if e.strategy != ALL}
        out: list[StudyEntry] = []
        for e in self.entries:
            if e.strategy != ALL:
                out.append(e)
                continue
            out.extend(
                StudyEntry(strategy=s, train_fractions=e.train_fractions, where=f"{e.where} -> {s}")
                for s in expand_all([ALL], registry)
                if s not in named
            )
        self.entries = out

    def _check_unique(self) -> None:
        seen: dict[str, StudyEntry] = {}
        for entry in self.entries:
            first = seen.get(entry.display)
            if first is not None:
                raise self._entry_error(
                    entry,
                    f'repeats {entry.display!r} of {first.where}; merge them, or give one a label = "..." to run both',
                )
            seen[entry.display] = entry

    def _check_data(self) -> None:
        from augforge.data.sources import NAMES, is_name

        if is_name(self.data):
            return
        if not Path(self.data).expanduser().exists():
            close = difflib.get_close_matches(self.data.lower(), NAMES, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"give a path or one of: {', '.join(NAMES)}"
            raise UsageError(f"{self.setting('data')}: no such file or folder; {hint}")

    def _check_executor(self) -> None:
        from augforge.bench.executors import executor_names

        known = executor_names()
        if self.executor not in known:
            raise UsageError(f"{self.setting('executor')}: choose one of {', '.join(known)}")

    # -- what the harness needs ------------------------------------------------------------------
    @property
    def workers(self) -> int:
        """Worker processes for the executor (``executor_options.workers``; 0: the executor decides)."""
        return int(self.executor_options.get("workers", 0))

    @property
    def executor_settings(self) -> dict[str, Any]:
        """``executor_options`` without ``workers``: what ``ExecutionContext.options`` takes."""
        return {k: v for k, v in self.executor_options.items() if k != "workers"}

    @property
    def name(self) -> str:
        """The study's name: its file's stem (``default`` for ``default.toml``)."""
        return self.path.stem if self.path is not None else "study"

    def build_preset(self, extra_set: dict[str, Any] | None = None) -> Preset:
        """The preset with the study's overrides (then ``extra_set``) applied and ``data.source`` set."""
        if self.preset not in PRESETS:
            raise UsageError(f"{self.setting('preset')}: choose one of {', '.join(PRESETS)}")
        overrides = {**self.set, **(extra_set or {})}
        try:
            preset = apply_overrides(get_preset(self.preset), overrides)
        except UsageError as exc:
            if self.from_flags:
                raise
            raise UsageError(f"{self.where('set')}: {str(exc).removeprefix('--set ')}") from None
        preset.data.source = self.data
        return preset

    def runs(self) -> list[StudyRun]:
        """Every strategy with the fractions it runs at, the baseline first.

        With ``baseline`` on, ``none`` runs at every fraction any entry uses (merged with a ``none``
        entry of the file), so each strategy has a baseline to be compared with at each fraction.
        Call after :meth:`validate` (``all`` must be expanded).
        """
        if any(e.strategy == ALL for e in self.entries):
            raise RuntimeError("StudySpec.runs() before validate(): 'all' is not expanded yet")
        runs = [
            StudyRun(e.strategy, e.params, tuple(e.train_fractions or self.train_fractions), e.label)
            for e in self.entries
        ]
        base = [r for r in runs if r.strategy == BASELINE and r.label is None]
        if self.baseline:
            every = {f for r in runs for f in r.train_fractions} | set(self.train_fractions)
            merged = StudyRun(BASELINE, base[0].params if base else {}, tuple(sorted(every, reverse=True)))
            runs = [merged] + [r for r in runs if r not in base]
        elif base:
            runs = base + [r for r in runs if r not in base]
        return runs


# -- parsing ---------------------------------------------------------------------------------------
def load_study(path: str | Path, registry: StrategyRegistry | None = None) -> StudySpec:
    """Read and check a study file; with ``registry``, also :meth:`StudySpec.validate` it.

    Raises UsageError (one line, naming the file and the key) for a missing or unreadable file, a TOML
    syntax error (with its line), an unknown key, a value of the wrong type, a train fraction outside
    (0, 1], a preset override that does not exist, or a strategy listed twice.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder; give a study file (.toml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the study file ({exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None

    check_keys(
        doc,
        ("study", "strategy"),
        what=f"{path}: top level",
        hint="a study file has one [study] table and [[strategy]] tables",
    )
    if "study" not in doc:
        raise UsageError(f'{path}: no [study] table; it names at least the data, e.g. data = "lidc-phantom"')
    study = doc["study"]
    if not isinstance(study, dict):
        raise UsageError(f"{path}: study: expected a table [study], got {describe(study)}")
    if "strategy" in study:  # TOML puts every key after [study] into that table
        raise UsageError(
            f"{path}: study: unknown key 'strategy'; write strategy = \"...\" above the [study] "
            "table, or use [[strategy]] tables"
        )
    check_keys(study, _STUDY_KEYS, what=f"{path}: study")

    def key(name: str) -> str:
        return f"{path}: study.{name}"

    if "data" not in study:
        raise UsageError(f"{key('data')} is missing: name the dataset (lidc-phantom) or give its path")
    owner = f"{path}: study"
    preset = _STUDY_PARAMS["preset"].coerce(study.get("preset", "quick"), strategy=owner, strict=True)
    if "allow_pickle" in study:  # unpickling runs code: only the user, on the command line, may allow it
        raise UsageError(
            f"{key('allow_pickle')}: a study file cannot permit unpickling; remove the key and "
            "pass --allow-pickle on the command line if you trust the data"
        )
    spec = StudySpec(
        entries=_entries(doc, path),
        seeds=_STUDY_PARAMS["seeds"].coerce(study.get("seeds", 1), strategy=owner, strict=True),
        train_fractions=_fractions(study.get("train_fractions", [1.0]), key("train_fractions")),
        preset=preset,
        data=_string(study["data"], key("data")),
        executor=_string(study.get("executor", "local"), key("executor")),
        executor_options=_executor_options(study.get("executor_options", {}), key("executor_options")),
        set=_overrides(study.get("set", {}), key("set")),
        baseline=_STUDY_PARAMS["baseline"].coerce(study.get("baseline", True), strategy=owner, strict=True),
        out=_string(study["out"], key("out")) if "out" in study else None,
        path=path,
    )
    spec._check_unique()
    spec.build_preset()  # a wrong override fails now, naming study.set
    if registry is not None:
        spec.validate(registry)
    return spec


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: expected a non-empty string, got {describe(value)}")
    return value.strip()


def _fractions(value: Any, where: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # a single number is a one-element list
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: expected an array of fractions in (0, 1], e.g. [0.25, 1.0], got {describe(value)}")
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"{where}: {describe(v)} is not a number; give fractions in (0, 1]")
        if not (math.isfinite(v) and 0.0 < v <= 1.0):
            raise UsageError(f"{where}: {v:g} is outside (0, 1]; a train fraction is a share, e.g. 0.5")
        if float(v) in out:
            raise UsageError(f"{where}: {v:g} is listed twice")
        out.append(float(v))
    return out


def _executor_options(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a table, e.g. [study.executor_options], got {describe(value)}")
    out = dict(value)
    if "workers" in out:
        out["workers"] = _WORKERS.coerce(out["workers"], strategy=where, strict=True)
    return out


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 15}}`` -> ``{"train.epochs": 15}``: an unquoted dotted TOML key makes
    nested tables, a quoted one a single key; both mean the same override."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _overrides(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(
            f'{where}: expected a table of preset overrides, e.g. "train.epochs" = 15, got {describe(value)}'
        )
    out: dict[str, Any] = {}
    for k, v in _flatten(value).items():
        section = k.partition(".")[0]
        if section not in SECTIONS:
            raise UsageError(
                f"{where}.{k}: {section!r} is not a preset section ({', '.join(SECTIONS)}); "
                "strategy parameters go in the [[strategy]] entry's params"
            )
        out[k] = v  # typed as TOML gives it; the preset's sections convert and check it
    return out


# -- strategies ----------------------------------------------------------------------------------
def _normalise(spec: str) -> str:
    return "+".join(p.strip() for p in spec.split("+"))


def _entries(doc: dict[str, Any], path: Path) -> list[StudyEntry]:
    raw = doc.get("strategy")
    if raw is None:
        raise UsageError(f'{path}: no strategies: add [[strategy]] tables with a name, or strategy = "all"')
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{path}: strategy: expected [[strategy]] tables or a name, got {describe(raw)}")
    return [_entry(item, n, path) for n, item in enumerate(raw, start=1)]


def _entry(item: Any, n: int, path: Path) -> StudyEntry:
    where = f"[[strategy]] #{n}"
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict):
        raise UsageError(f"{path}: {where}: expected a table with a name, got {describe(item)}")
    if "name" not in item:
        raise UsageError(f'{path}: {where}: name is missing, e.g. name = "affine" or "dcgan+affine"')
    name = _normalise(_string(item["name"], f"{path}: {where}.name"))
    where = f"{where} ({name})"
    check_keys(item, _ENTRY_KEYS, what=f"{path}: {where}")
    parts = name.split("+")
    if any(not p for p in parts):
        raise UsageError(f"{path}: {where}.name: empty part; join names with '+', e.g. dcgan+affine")
    if ALL in parts and len(parts) > 1:
        raise UsageError(f"{path}: {where}.name: 'all' cannot be part of a composite")
    label = None
    if "label" in item:
        label = _string(item["label"], f"{path}: {where}.label")
        if not _LABEL.fullmatch(label):
            raise UsageError(
                f"{path}: {where}.label = {label!r}: use up to 40 letters, digits, spaces "
                "and . _ + ( ) -, starting with a letter or digit"
            )
        if name == ALL:
            raise UsageError(f"{path}: {where}.label: 'all' stands for many strategies and takes no label")
        if label == BASELINE and name != BASELINE:
            raise UsageError(f"{path}: {where}.label: 'none' is the baseline's name")
    fractions = (
        _fractions(item["train_fractions"], f"{path}: {where}.train_fractions") if "train_fractions" in item else None
    )
    params = _params(item.get("params", {}), parts, f"{path}: {where}.params")
    if params and name == ALL:
        raise UsageError(
            f"{path}: {where}.params: 'all' takes no parameters; add an entry for the "
            "strategy whose parameters you want to set"
        )
    return StudyEntry(strategy=name, params=params, train_fractions=fractions, label=label, where=where)


def _params(value: Any, parts: list[str], where: str) -> dict[str, dict[str, Any]]:
    """The entry's ``params`` as part -> values. A single strategy takes its values directly
    (``params = { p = 0.8 }``, or as ``[strategy.params.NAME]``); a hybrid takes a table per part."""
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a table, e.g. params = {{ p = 0.8 }}, got {describe(value)}")
    if not value:
        return {}
    if len(parts) == 1 and not (set(value) == {parts[0]} and isinstance(value[parts[0]], dict)):
        return {parts[0]: dict(value)}
    out: dict[str, dict[str, Any]] = {}
    for part, values in value.items():
        if not isinstance(values, dict):
            raise UsageError(
                f"{where}.{part}: a hybrid takes parameters per part, e.g. "
                f"[strategy.params.{parts[0]}]; got {describe(values)}"
            )
        if part not in parts:
            raise UsageError(
                f"{where}.{part}: {'+'.join(parts)!r} has no part {part!r}; its parts are {', '.join(parts)}"
            )
        out[part] = dict(values)  # the strategy's Params check them (StudySpec.validate)
    return out


def expand_all(names: Sequence[str], registry: StrategyRegistry) -> list[str]:
    """Strategy names with ``all`` replaced by every registered strategy except the baseline ``none``
    (third-party ones included), in name order; repeats are dropped (the first one stays).

    ``["all"]`` -> ``["affine", "classical", ...]``; ``["dcgan+affine", "all"]`` keeps the hybrid
    first. Used by ``--strategy all`` and by study files. Raises UsageError for ``all`` inside a
    composite (``all+affine``).
    """
    out: list[str] = []
    for raw in names:
        name = _normalise(raw)
        if name == ALL:
            items = [s for s in registry.names() if s != BASELINE]
        elif ALL in name.split("+"):
            raise UsageError(f"strategy {raw!r}: 'all' cannot be part of a composite")
        else:
            items = [name]
        out.extend(s for s in items if s not in out)
    return out


def flags_study(
    strategies: Sequence[str],
    *,
    registry: StrategyRegistry,
    strategy_params: dict[str, dict[str, Any]] | None = None,
    train_fractions: Sequence[float] = (),
    baseline: bool = True,
    seeds: int | None = None,
    preset: str | None = None,
    data: str | None = None,
    executor: str | None = None,
    overrides: dict[str, str] | None = None,
) -> StudySpec:
    """The study that ``augforge bench --strategy ...`` flags describe, so that flags and study files
    are planned, checked and run the same way. ``all`` is expanded; ``strategy_params`` (``--set
    flip.p=1``) go to every strategy with that part; each of ``train_fractions`` applies to every
    strategy. Raises UsageError for a ``--set`` section that names no strategy of the study."""
    from augforge.bench.study import check_param_sections
    from augforge.config import DEFAULT_PRESET

    names = expand_all(strategies, registry)
    params = strategy_params or {}
    check_param_sections(params, ([BASELINE] if baseline else []) + names, registry)
    fractions = list(dict.fromkeys(float(f) for f in train_fractions)) or [1.0]
    entries = [StudyEntry(s, {p: params[p] for p in s.split("+") if p in params}) for s in names]
    preset_name = preset or DEFAULT_PRESET
    given = {"seeds": seeds, "preset": preset, "data": data, "executor": executor, "set": overrides or None}
    source = data or (get_preset(preset_name).data.source if preset_name in PRESETS else "lidc-phantom")
    return StudySpec(
        entries=entries,
        seeds=1 if seeds is None else seeds,
        train_fractions=fractions,
        preset=preset_name,
        data=source,
        executor=executor or "local",
        set=dict(overrides or {}),
        baseline=baseline,
        from_cli=frozenset(k for k, v in given.items() if v is not None),
        from_flags=True,
    )


# -- trials ----------------------------------------------------------------------------------------
def plan_trials(
    spec: StudySpec,
    preset: Preset,
    *,
    seeds: Sequence[int],
    dataset_fingerprint: str,
    registry: StrategyRegistry | None = None,
) -> list[Trial]:
    """The trials of a validated study: every run at each of its fractions and every seed.

    Ordered by fraction (largest first: the full-size leaderboard is complete before the learning
    curves start), then seed, then the runs' order (baseline first), so that an interrupted study
    still has comparable pairs. An entry's ``label`` becomes its trials' label (what the leaderboard
    shows, part of the trial's key).
    """
    from augforge.bench.study import plan_study

    if registry is None:
        from augforge.plugins import get_registry

        registry = get_registry()
    cells: list[tuple[float, int, int, Trial]] = []
    for order, run in enumerate(spec.runs()):
        for trial in plan_study(
            [run.strategy],
            preset=preset,
            seeds=seeds,
            fractions=run.train_fractions,
            dataset_fingerprint=dataset_fingerprint,
            strategy_params=run.params,
            baseline=False,
            registry=registry,
        ):
            if run.label is not None:
                trial.label = run.label
            cells.append((-trial.train_fraction, trial.seed, order, trial))
    cells.sort(key=lambda c: c[:3])
    return [c[3] for c in cells]
