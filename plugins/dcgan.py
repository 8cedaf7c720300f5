"""Built-in plugin: DCGAN tumour synthesis, the seed paper's central method.

``dcgan-paper`` follows the paper (reference/PAPER_PROTOCOL.md): a 1-channel 64x64 DCGAN of the
paper's exact architecture learns tumour patches (HU inside the mask, 2000 HU outside); the
synthetic mask is the generated image thresholded; tumours are shrunk by a random factor 1-4 and
pasted in the upper rows of the lung.

``dcgan`` is the improved default: the generator makes the tumour's HU **and its mask** as two
channels, so the label is generated, not guessed by a threshold; patches are square crops (no
stretching) with a margin relative to the tumour; real patches are flipped/turned during the fit
and the real label is smoothed to 0.9; tumours are pasted at the sizes real training tumours have;
sizes and budget follow the preset's ``gen`` section unless the strategy's parameters say otherwise.

Both are written on :class:`augforge.synthesis.GeneratorStrategy`, which fits on the training split
only, caches the fitted generator under ``ctx.cache_dir/<name>-<key>`` (key: the exact tumour
patches, their slice ids, the dataset fingerprint, the fit configuration and the generator seed),
and adds ``ratio`` synthetic slices per real training slice, each a healthy canvas with one
generated tumour in its lung parenchyma. Data without healthy slices (crop exports) paste into the
real training slices, clear of their tumours.
``dcgan`` also runs on images without Hounsfield units (8-bit crops): the generator's range, the
patches' background and where lung and vessels lie are then read from the training slices
(:mod:`augforge.synthesis.intensity`). ``dcgan-paper`` keeps the paper's HU conventions and needs HU.

Seeds: the fit uses ``gen_seed`` (default 0), not the trial's seed, so a study over several seeds
fits the generator once and the seeds vary the sampled tumours, their placement and the U-Net
training. Set ``gen_seed=None`` to refit per trial seed and include the generator's own variance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from augforge import Param, PrepareContext, Slice, hookimpl
from augforge.synthesis import (
    MATCH_NOISE,
    PARENCHYMA_HU,
    PASTE_PARAMS,
    Fitted,
    GeneratorStrategy,
    HUScale,
    PasteScale,
    TumourROIs,
    gen_seed_param,
    ratio_param,
    sizes_param,
)

if TYPE_CHECKING:
    from augforge import Preset


@dataclass(frozen=True)
class Variant:
    """What differs between the paper's DCGAN and the improved one."""

    channels: int  # 1: HU (mask by threshold); 2: HU and mask
    scale: HUScale  # HU window mapped to the generator's [-1, 1]
    background_hu: float  # value outside the tumour in the training patches
    margin_px: int
    margin_frac: float
    square: bool
    real_label: float
    augment: bool


def _params(*, paper: bool) -> tuple[Param, ...]:
    common = (
        ratio_param(),
        Param("epochs", int, None, "fit epochs; None: the preset's gen.epochs", low=1, nullable=True),
        Param("batch_size", int, None, "fit batch size; None: the preset's gen.batch_size", low=2, nullable=True),
        gen_seed_param(),
        *PASTE_PARAMS,
    )
    if paper:
        return common + (
            Param(
                "threshold_hu",
                float,
                1000.0,
                "generated pixels below this HU are tumour (the background is 2000 HU)",
                low=-1000.0,
                high=2000.0,
            ),
            Param(
                "max_row_frac",
                float,
                350 / 512,
                "tumours only above this fraction of the slice height (paper: row < 350 of 512)",
                low=0.05,
                high=1.0,
            ),
            sizes_param("paper"),
        )
    return common + (
        Param("width", int, None, "base width of G and D; None: the preset's gen.width", low=1, nullable=True),
        Param("latent_dim", int, None, "latent size; None: the preset's gen.latent_dim", low=1, nullable=True),
        Param(
            "roi_size",
            int,
            None,
            "patch side (a power of two); None: the preset's gen.roi_size",
            choices=(8, 16, 32, 64, 128),
            nullable=True,
        ),
        MATCH_NOISE,
        sizes_param("train"),
    )


class TumourGAN(GeneratorStrategy):
    """Shared machinery of ``dcgan`` and ``dcgan-paper``: the DCGAN fit and the patches' encoding."""

    stream = 0xDC6A
    model_io = ("augforge.models.dcgan", "save_generator", "load_generator")
    fit_leftovers = ("checkpoint.pt",)  # the fit is done: keep the generator only
    variant: ClassVar[Variant]

    def variant_for(self, scale: PasteScale) -> Variant:
        """The variant on ``scale``: as declared on HU; on other scales, the generator's range and the
        patches' background taken from the scale."""
        if scale.unit == "HU":
            return self.variant
        return replace(self.variant, scale=scale.generator, background_hu=scale.parenchyma)

    # -- the fit ------------------------------------------------------------------------------
    def fit_config(self, preset: Preset, trial_seed: int) -> Any:
        """The :class:`augforge.models.dcgan.DCGANConfig` of this strategy under ``preset``."""
        from augforge.models.dcgan import DCGANConfig

        g, c = preset.gen, self.config
        if self.variant.channels == 1:  # the paper's architecture, whatever the preset
            size, width, latent = 64, 64, 128
        else:
            size = c["roi_size"] or g.roi_size
            width = c["width"] or g.width
            latent = c["latent_dim"] or g.latent_dim
        return DCGANConfig(
            size=size,
            channels=self.variant.channels,
            latent_dim=latent,
            width=width,
            epochs=c["epochs"] or g.epochs,
            batch_size=c["batch_size"] or g.batch_size,
            real_label=self.variant.real_label,
            augment=self.variant.augment,
            seed=trial_seed if c["gen_seed"] is None else c["gen_seed"],
            sample_every=g.sample_every,
        )

    def fit_state(self, ctx: PrepareContext, scale: PasteScale) -> Variant:
        return self.variant_for(scale)

    def patch_size(self, ctx: PrepareContext) -> int:
        return self.fit_config(ctx.preset, ctx.seed).size

    def patch_options(self, scale: PasteScale) -> dict[str, Any]:
        v = self.variant_for(scale)
        return {
            "margin_px": v.margin_px,
            "margin_frac": v.margin_frac,
            "square": v.square,
            "background_hu": v.background_hu,
        }

    def fit_facts(self, ctx: PrepareContext, scale: PasteScale) -> dict[str, Any]:
        cfg = self.fit_config(ctx.preset, ctx.seed)
        fit = {k: v for k, v in asdict(cfg).items() if k not in ("sample_every", "checkpoint_every")}
        return {"fit": fit, "variant": asdict(self.variant_for(scale))}

    def encode(self, rois: TumourROIs, variant: Variant | None = None) -> np.ndarray:
        """Patches -> generator space: (N, channels, S, S) float32 in [-1, 1]."""
        v = variant or self.variant
        x = v.scale.to_unit(rois.hu)[:, None]
        if v.channels == 2:
            # The mask channel is the tumour's coverage of each pixel: a generator matches soft
            # edges far more easily than a binary step, and decode() thresholds it at one half.
            x = np.concatenate([x, rois.coverage[:, None] * 2 - 1], axis=1)
        return x

    def decode(self, x: np.ndarray, variant: Variant | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Generator space (n, channels, S, S) -> HU (n, S, S) float32 and tumour masks (n, S, S) bool."""
        v = variant or self.variant
        hu = v.scale.to_hu(x[:, 0])
        mask = x[:, 1] > 0 if v.channels == 2 else hu < self.config["threshold_hu"]
        return hu, mask

    def fit_generator(
        self, rois: TumourROIs, ctx: PrepareContext, *, folder: Path, scale: PasteScale, state: Variant
    ) -> tuple[Any, dict[str, Any]]:
        import torch

        from augforge.models.dcgan import train_dcgan

        cfg = self.fit_config(ctx.preset, ctx.seed)
        ctx.log(
            f"{self.name}: {cfg.size}x{cfg.size}x{cfg.channels}, width {cfg.width}, latent {cfg.latent_dim}, "
            f"{cfg.epochs} epochs, batch {cfg.batch_size}, seed {cfg.seed}"
        )
        result = train_dcgan(
            torch.from_numpy(self.encode(rois, state)),
            cfg,
            out_dir=folder,
            device=ctx.device,
            progress=ctx.progress,
            log=ctx.log,
            to_display=lambda x: scale.display(state.scale.to_hu(x[:, 0])),  # lung window, for the grids
        )
        facts = {
            "config": asdict(cfg),
            "seconds": round(result.seconds, 1),
            "warnings": result.warnings,
            "history": result.history,
        }
        return result.generator, facts

    # -- sampling -----------------------------------------------------------------------------
    def sample_patches(self, fitted: Fitted, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` generated tumours: HU (n, S, S) float32 and masks (n, S, S) bool (raw, not resized)."""
        from augforge.models.dcgan import sample

        return self.decode(sample(fitted.model, n, seed=seed), fitted.state)

    def site_options(self, canvas: Slice) -> dict[str, Any]:
        c = self.config
        max_row = round(c["max_row_frac"] * canvas.shape[0]) if "max_row_frac" in c else None
        return {**super().site_options(canvas), "max_row": max_row}


class DCGAN(TumourGAN):
    name = "dcgan"
    description = (
        "DCGAN generating tumour HU and mask together, pasted into healthy lung parenchyma (improved default)."
    )
    params = _params(paper=False)
    variant = Variant(
        channels=2,
        scale=HUScale(-1100.0, 500.0),
        background_hu=PARENCHYMA_HU,
        margin_px=1,
        margin_frac=0.25,
        square=True,
        real_label=0.9,
        augment=True,
    )


class PaperDCGAN(TumourGAN):
    name = "dcgan-paper"
    description = (
        "The seed paper's DCGAN: 64x64 tumour HU only, mask by threshold, pasted into healthy "
        "lung (faithful variant; meant for a GPU)."
    )
    params = _params(paper=True)
    needs_gpu = True
    needs_hu = True  # the paper's conventions are HU: 2000 HU background, threshold_hu, the -1024..2000 map
    variant = Variant(
        channels=1,
        scale=HUScale(-1024.0, 2000.0),
        background_hu=2000.0,
        margin_px=10,
        margin_frac=0.0,
        square=False,
        real_label=1.0,
        augment=False,
    )


@hookimpl
def register_strategies(register):
    register(DCGAN)
    register(PaperDCGAN)
