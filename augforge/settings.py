"""Settings: one way to declare, convert and check a typed value, at the place where it enters.

Values reach augforge as command-line strings (``--set train.epochs=5``), TOML values (a study file)
or Python values (the API). Each is converted and checked once, by the :class:`Param` that declares it:

- a strategy's parameters (``Strategy.params``), when ``registry.create`` builds the strategy;
- the preset's sections (:mod:`augforge.config`): every field is declared with :func:`setting`, and a
  :class:`Section` converts and checks each value as it is set, so a preset, a ``--set`` override, a
  study file's ``set`` table and a section built in Python pass the same rules;
- a study file's ``[study]`` keys (:mod:`augforge.bench.studyfile`) and the executors' options.

Code downstream takes the values as given and does not check them again. Every problem is one
:class:`~augforge.errors.UsageError` line that names the key, the value and what would fit.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from augforge.errors import UsageError

__all__ = ["Param", "Section", "check_keys", "describe", "setting", "unknown_key"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """A typed value with a default, and the rule it must follow.

    type:     one of bool, int, float, str.
    choices:  allowed values, if the value is an enumeration (strings match whatever their case).
    low/high: bounds for numbers; ``bounds`` says whether each end is included: ``"[]"`` (both, the
              default), ``"()"`` (neither), ``"[)"`` or ``"(]"``.
    nullable: ``None`` is allowed (for example "follow the preset").
    """

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    bounds: str = "[]"

    def check_declaration(self) -> str | None:
        """Return what is wrong with this declaration, or None when it is valid."""
        if not self.name.isidentifier():
            return f"parameter name {self.name!r} is not an identifier"
        if self.type not in _TYPES:
            return f"parameter {self.name!r} has type {self.type!r}; use bool, int, float or str"
        if self.bounds not in ("[]", "()", "[)", "(]"):
            return f"parameter {self.name!r} has bounds {self.bounds!r}; use '[]', '()', '[)' or '(]'"
        if self.default is None:
            return None if self.nullable else f"parameter {self.name!r} defaults to None but is not nullable"
        try:
            self.coerce(self.default, strategy="<declaration>")
        except UsageError as exc:
            return f"default of parameter {self.name!r} is invalid ({exc})"
        return None

    def coerce(self, value: Any, *, strategy: str, strict: bool = False) -> Any:
        """Convert ``value`` (a Python or TOML value, or a command-line string) to this type and check it.

        ``strategy`` names the owner in messages (a strategy, a preset section such as ``train``, or a
        study file's ``FILE: study``). ``strict``: the value is typed (a study file's own keys), so a
        string stands for a string only. Raises UsageError naming ``OWNER.NAME`` when the value does not fit.
        """
        where = f"{strategy}.{self.name}"
        if strict and not _typed(value, self.type) and not (value is None and self.nullable):
            raise UsageError(f"{where}: expected {_article(self.type)}, got {describe(value)}")
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null"} and self.type is not str):
            if self.nullable:
                return None
            raise UsageError(f"{where}: None is not allowed; give {_article(self.type)}")
        if isinstance(value, str) and self.type is not str:
            value = self._parse(value, where)
        if self.type is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{where}: expected true or false, got {value!r}")
        elif self.type is int:
            integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
            if isinstance(value, bool) or not integral:
                raise UsageError(f"{where}: expected an integer, got {value!r}")
            value = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise UsageError(f"{where}: expected a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise UsageError(f"{where}: {value} is not a finite number")
        elif not isinstance(value, str):
            raise UsageError(f"{where}: expected a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            value = self._choice(value, where)
        self._check_bounds(value, where)
        return value

    def _parse(self, text: str, where: str) -> Any:
        t = text.strip()
        if self.type is bool:
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise UsageError(f"{where}: expected true or false, got {text!r}")
        try:
            return float(t) if self.type is float else int(t)
        except ValueError:
            raise UsageError(f"{where}: expected {_article(self.type)}, got {text!r}") from None

    def _choice(self, value: Any, where: str) -> Any:
        assert self.choices is not None
        if isinstance(value, str):
            folded = {str(c).lower(): c for c in self.choices}
            if value.strip().lower() in folded:
                return folded[value.strip().lower()]
        close = difflib.get_close_matches(value, [str(c) for c in self.choices], n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]}?)" if close else self._help()
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}{hint}")

    def _check_bounds(self, value: Any, where: str) -> None:
        low_open, high_open = self.bounds[0] == "(", self.bounds[1] == ")"
        below = self.low is not None and (value <= self.low if low_open else value < self.low)
        above = self.high is not None and (value >= self.high if high_open else value > self.high)
        if not (below or above):
            return
        if self.low is not None and self.high is not None:
            span = f"{self.bounds[0]}{self.low:g}, {self.high:g}{self.bounds[1]}"
            raise UsageError(f"{where}: {value!r} is outside {span}{self._help()}")
        if below:
            side = "not above" if low_open else "below"
            raise UsageError(f"{where}: {value!r} is {side} the minimum {self.low:g}{self._help()}")
        side = "not below" if high_open else "above"
        raise UsageError(f"{where}: {value!r} is {side} the maximum {self.high:g}{self._help()}")

    def _help(self) -> str:
        return f" ({self.help})" if self.help else ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type.__name__, "default": self.default}
        if self.help:
            d["help"] = self.help
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.low is not None:
            d["low"] = self.low
        if self.high is not None:
            d["high"] = self.high
        if self.bounds != "[]" and (self.low is not None or self.high is not None):
            d["bounds"] = self.bounds
        return d


def describe(value: Any) -> str:
    """A value as messages show it: ``str '3'``, ``the boolean true``, ``a table``, ``an array``."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _typed(value: Any, t: type) -> bool:
    if t is bool or isinstance(value, bool):
        return isinstance(value, bool) and t is bool
    return isinstance(value, {int: numbers.Integral, float: numbers.Real, str: str}[t])


def _article(t: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, t.__name__)


def setting(
    default: Any,
    help: str = "",
    *,
    choices: Iterable[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    bounds: str = "[]",
) -> Any:
    """A field of a :class:`Section` with its default and rule (the field's type is its annotation)."""
    rule = {"help": help, "choices": tuple(choices) if choices is not None else None, "low": low, "high": high}
    return dataclasses.field(default=default, metadata={"rule": {**rule, "bounds": bounds}})


class Section:
    """Base of a settings dataclass: every field declared with :func:`setting` is converted and checked
    whenever it is set (at construction, by ``dataclasses.replace``, or by assignment), under the name
    ``SECTION.FIELD``. A subclass sets ``section`` and may check rules between fields in ``check``."""

    section: ClassVar[str] = "settings"

    def __setattr__(self, name: str, value: Any) -> None:
        param = _params(type(self)).get(name)
        if param is not None:
            value = param.coerce(value, strategy=self.section)
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Rules that involve more than one field, or a format no :class:`Param` states; raise UsageError."""

    @classmethod
    def params(cls) -> list[Param]:
        """Every field's declaration, in field order."""
        return list(_params(cls).values())


@functools.cache
def _params(cls: type) -> dict[str, Param]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Param] = {}
    for f in dataclasses.fields(cls):
        rule = f.metadata.get("rule")
        if rule is None:
            continue
        t, nullable = hints[f.name], False
        if typing.get_origin(t) is typing.Union or isinstance(t, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            t, nullable = args[0], True
        out[f.name] = Param(f.name, t, f.default, nullable=nullable, **rule)
    return out


def unknown_key(key: str, known: Iterable[str], *, what: str) -> str:
    """The message for a key that is not one of ``known``: ``what: unknown key 'x'; did you mean 'y'?``
    (or the known keys when none is close)."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    advice = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"{what}: unknown key {key!r}; {advice}"


def check_keys(table: Mapping[str, Any], known: Iterable[str], *, what: str, hint: str = "") -> None:
    """Raise UsageError for the first key of ``table`` that is not one of ``known``."""
    known = list(known)
    for k in table:
        if k not in known:
            message = unknown_key(k, known, what=what)
            if hint and not difflib.get_close_matches(k, known, n=1):
                message = f"{what}: unknown key {k!r}; {hint}"
            raise UsageError(message)
