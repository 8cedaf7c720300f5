"""Built-in plugin: named hybrids, fixed recipes of other strategies.

Any registered strategies compose without this plugin: ``--strategy dcgan+affine`` (or
``name = "dcgan+affine"`` in a study file) builds an :class:`augforge.strategy.Composite` whose
offline steps run in the order written (each part's ``prepare`` receives the training set the part
before it returned) and whose online transforms apply in that order, each from its own seed stream.
Third-party strategies compose the same way, and each part takes its own parameters
(``--set dcgan.ratio=2``, or ``[strategy.params.dcgan]`` in a study file).

A named hybrid adds two things to such a composition: a place in ``augforge strategies``, with a
description that says why the recipe is worth running, and a place in ``--strategy all``, which ranks
every *registered* strategy and would otherwise never include a hybrid. Each is a
:class:`~augforge.strategy.Composite` of its parts with their default parameters: trials record the
hybrid's name and every part with its parameters, and its draws equal those of the spelled-out
composition. To tune a part, spell the composition out instead.

The two registered here are a matched pair, the same online half after a different offline one, so
their difference is the tumour source alone:

- ``gan-affine`` = ``dcgan+affine``: generated tumours, then affine warps. The seed paper's best row
  was "VQ-VAE + DCGAN + affine" (reference/PAPER_PROTOCOL.md); augforge has no VQ-VAE, so this is the
  closest recipe.
- ``paste-affine`` = ``copy-paste+affine``: the same with real training tumours pasted instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

from augforge import Composite, Strategy, UnknownStrategyError, UsageError, get_registry, hookimpl, resolve_params


class NamedHybrid(Composite):
    """A :class:`Composite` of the registered strategies ``recipe`` (in order, default parameters),
    registered under its own ``name``.

    ``needs_gpu`` is declared on the class, where ``augforge strategies`` reads it: keep it equal to
    whether any part needs one.
    """

    recipe: ClassVar[tuple[str, ...]] = ()
    # A class attribute here, where Composite has a property: the listing reads it from the class.
    needs_gpu: ClassVar[bool] = False  # type: ignore[misc]

    def __init__(self, **values: Any):
        cls = type(self)
        if values:
            # resolve_params names the first unknown key; the hint says where part parameters go.
            try:
                resolve_params(cls, values)
            except UsageError as exc:
                raise UsageError(
                    f"{exc}; to set the parts' parameters, write the composition "
                    f"{'+'.join(cls.recipe)!r} with per-part values instead"
                ) from None
        super().__init__([_build_part(cls.name, part) for part in cls.recipe])
        # Composite names itself after its parts; a named hybrid keeps its registered name.
        self.name = cls.name  # type: ignore[misc]

    @property
    def composition(self) -> str:
        """The spelled-out equivalent, e.g. ``dcgan+affine``."""
        return "+".join(p.label for p in self.parts)

    @property
    def label(self) -> str:  # type: ignore[override]
        return type(self).name

    def describe(self) -> dict[str, Any]:
        return {"name": self.label, "composition": self.composition, "parts": [p.describe() for p in self.parts]}


def _build_part(hybrid: str, part: str) -> Strategy:
    try:
        cls = get_registry().get(part)
    except UnknownStrategyError:
        raise UsageError(
            f"strategy {hybrid!r} needs strategy {part!r}, which is not registered; is its "
            "plugin disabled (AUGFORGE_LOAD_PLUGINS) or broken? See `augforge plugins`"
        ) from None
    return cls()


class GanAffine(NamedHybrid):
    name = "gan-affine"
    description = (
        "dcgan+affine: generated tumours pasted into healthy slices, then affine warps; the "
        "closest recipe to the seed paper's best (VQ-VAE + DCGAN + affine)."
    )
    recipe = ("dcgan", "affine")


class PasteAffine(NamedHybrid):
    name = "paste-affine"
    description = (
        "copy-paste+affine: real training tumours pasted into healthy slices, then affine warps; "
        "the control for gan-affine."
    )
    recipe = ("copy-paste", "affine")


@hookimpl
def register_strategies(register):
    register(GanAffine)
    register(PasteAffine)
