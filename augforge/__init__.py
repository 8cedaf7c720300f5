"""augforge: augmentation strategies for lung-cancer CT segmentation, and a harness that ranks them.

Public API for plugin authors::

    from augforge import hookimpl, Strategy, Param

    class Mirror(Strategy):
        name = "mirror"
        description = "Left-right flip with probability p."
        params = (Param("p", float, 0.5, "flip probability", low=0.0, high=1.0),)

    @hookimpl
    def register_strategies(register):
        register(Mirror)

The public API is this package's names and those of the modules in ``PUBLIC_MODULES`` (each lists
them in ``__all__``): a third-party plugin can do everything the built-in plugins do with them, and
the built-ins use nothing else (tests/test_public_api.py checks). Everything else is internal and may
change between versions.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from augforge.config import Preset
    from augforge.data.records import LUNG_RADS_CLASSES, Dataset, Slice
    from augforge.errors import AugforgeError, DataError, UnknownStrategyError, UsageError
    from augforge.hookspecs import hookimpl, hookspec
    from augforge.plugins import StrategyRegistry, get_registry
    from augforge.strategy import BASELINE, Composite, Param, PrepareContext, Strategy, Transform, resolve_params

#: The modules whose ``__all__`` names, with this package's, make the public API.
PUBLIC_MODULES: tuple[str, ...] = (
    "augforge",
    "augforge.fileio",  # atomic writes, checksums, clean-up of a crashed writer's temporaries
    "augforge.models",  # the segmentation networks
    "augforge.models.dcgan",  # the DCGAN: fit, save, load, sample
    "augforge.models.vqvae",  # the VQ-VAE and its PixelCNN prior: fit, save, load, sample
    "augforge.models.ddpm",  # the mask-conditioned diffusion model: fit, save, load, sample
    "augforge.seeding",  # random streams derived from a trial's seed
    "augforge.synthesis",  # tumour patches, placement, paste-in, intensity anchors, quality summary
    "augforge.transforms",  # strategies built on albumentations pipelines
)

# Each public name is imported from its module on first use. Importing the package itself stays
# light (no numpy, no torch), so that the command line can take over Ctrl-C before the heavy imports
# start (augforge.launch).
_HOMES = {
    "Preset": "augforge.config",
    "LUNG_RADS_CLASSES": "augforge.data.records",
    "Dataset": "augforge.data.records",
    "Slice": "augforge.data.records",
    "AugforgeError": "augforge.errors",
    "DataError": "augforge.errors",
    "UnknownStrategyError": "augforge.errors",
    "UsageError": "augforge.errors",
    "hookimpl": "augforge.hookspecs",
    "hookspec": "augforge.hookspecs",
    "StrategyRegistry": "augforge.plugins",
    "get_registry": "augforge.plugins",
    "BASELINE": "augforge.strategy",
    "Composite": "augforge.strategy",
    "Param": "augforge.strategy",
    "PrepareContext": "augforge.strategy",
    "Strategy": "augforge.strategy",
    "Transform": "augforge.strategy",
    "resolve_params": "augforge.strategy",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "BASELINE",
    "LUNG_RADS_CLASSES",
    "PUBLIC_MODULES",
    "AugforgeError",
    "Composite",
    "DataError",
    "Dataset",
    "Param",
    "PrepareContext",
    "Preset",
    "Slice",
    "Strategy",
    "StrategyRegistry",
    "Transform",
    "UnknownStrategyError",
    "UsageError",
    "__version__",
    "get_registry",
    "hookimpl",
    "hookspec",
    "resolve_params",
]
