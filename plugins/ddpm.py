"""Built-in plugin: ``ddpm``, tumour intensities painted by a diffusion model inside real outlines.

Diffusion models are the generator recent work reaches for (Lung-DDPM, 2025, reports nodule Dice
0.36 -> 0.39 with synthetic CT). ``ddpm`` (model in :mod:`augforge.models.ddpm`) learns to paint a
tumour's intensities **given its mask**: each new tumour takes the outline of a real training
tumour, turned, flipped and rescaled at random, and the model paints inside it, so its label is
exactly that outline (nothing is thresholded from a generated image), and the pasted tumour keeps
the size in mm of the outline's tumour, rescaled. Sampling takes ``sample_steps`` deterministic
DDIM steps. Placement, canvases and caching are those of every generator
(:class:`augforge.synthesis.GeneratorStrategy`).

Sizes from the preset's ``gen`` section: ``quick`` (gen.width 16) trains a denoiser of width 16 for
3,000 updates of batch 16 and samples in 10 steps; ``paper`` (gen.width 64) width 64, 15,000
updates of batch 64, 50 steps, which wants a GPU.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from augforge import Param, PrepareContext, Slice, hookimpl, seeding
from augforge.synthesis import (
    MATCH_NOISE,
    PASTE_PARAMS,
    Fitted,
    GeneratorStrategy,
    PasteScale,
    Tumour,
    TumourROIs,
    gen_seed_param,
    ratio_param,
    sizes_param,
)

#: Separates the outlines' draws from other streams of the same seed.
_OUTLINES = 0x0D1F


def _rescaled(mask: np.ndarray, factor: float) -> np.ndarray:
    """``mask`` (S, S) scaled about its centre by ``factor``, cut or padded back to (S, S)."""
    side = mask.shape[0]
    new = max(2, round(side * factor))
    scaled = cv2.resize(mask.astype(np.float32), (new, new), interpolation=cv2.INTER_LINEAR) >= 0.5
    out = np.zeros((side, side), bool)
    if new >= side:
        off = (new - side) // 2
        out[:] = scaled[off : off + side, off : off + side]
    else:
        off = (side - new) // 2
        out[off : off + new, off : off + new] = scaled
    return out


class DDPMTumours(GeneratorStrategy):
    name = "ddpm"
    description = (
        "Diffusion model painting tumour HU inside real training outlines (turned, flipped, rescaled): "
        "exact labels, pasted into healthy lung parenchyma."
    )
    stream = 0xD0F1
    model_io = ("augforge.models.ddpm", "save_ddpm", "load_ddpm")
    params = (
        ratio_param(),
        Param("updates", int, None, "training updates; None: 50 x the preset's gen.epochs", low=1, nullable=True),
        Param(
            "sample_steps",
            int,
            None,
            "DDIM steps per sample; None: 10 (quick) or 50 (paper)",
            low=1,
            high=1000,
            nullable=True,
        ),
        Param("scale_min", float, 0.8, "smallest rescaling of an outline", low=0.25, high=1.0),
        Param("scale_max", float, 1.25, "largest rescaling of an outline", low=1.0, high=2.0),
        gen_seed_param(),
        MATCH_NOISE,
        sizes_param("train"),
        *PASTE_PARAMS,
    )

    # -- the fit ------------------------------------------------------------------------------
    def fit_config(self, ctx: PrepareContext) -> Any:
        """The :class:`augforge.models.ddpm.DDPMConfig` of this strategy under ``ctx.preset``."""
        from augforge.models.ddpm import DDPMConfig

        g, c = ctx.preset.gen, self.config
        big = g.width >= 64
        return DDPMConfig(
            size=g.roi_size,
            width=max(8, 8 * round(g.width / 8)),
            updates=c["updates"] or 50 * g.epochs,
            batch_size=64 if big else 16,
            sample_steps=c["sample_steps"] or (50 if big else 10),
            seed=ctx.seed if c["gen_seed"] is None else c["gen_seed"],
        )

    def patch_size(self, ctx: PrepareContext) -> int:
        return self.fit_config(ctx).size

    def fit_facts(self, ctx: PrepareContext, scale: PasteScale) -> dict[str, Any]:
        fit = {k: v for k, v in asdict(self.fit_config(ctx)).items() if k != "sample_steps"}  # sampling only
        return {"fit": fit, "window": [scale.lo, scale.hi]}

    def fit_state(self, ctx: PrepareContext, scale: PasteScale) -> Any:
        return self.fit_config(ctx).sample_steps

    def fit_generator(
        self, rois: TumourROIs, ctx: PrepareContext, *, folder: Path, scale: PasteScale, state: Any
    ) -> tuple[Any, dict[str, Any]]:
        import torch

        from augforge.models.ddpm import train_ddpm

        cfg = self.fit_config(ctx)
        ctx.log(f"{self.name}: {cfg.size}x{cfg.size}, width {cfg.width}, {cfg.updates} updates of {cfg.batch_size}")
        x = torch.from_numpy(scale.generator.to_unit(rois.hu)[:, None].astype(np.float32))
        m = torch.from_numpy(rois.mask[:, None].astype(np.float32))
        fit = train_ddpm(x, m, cfg, device=ctx.device, progress=ctx.progress, log=ctx.log)
        return fit, self.fit_record(fit)

    # -- sampling -----------------------------------------------------------------------------
    def outlines(self, rois: TumourROIs, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` real training outlines, each turned, maybe flipped and rescaled: masks (n, S, S) bool,
        the tumour each came from (n,), and its rescaling (n,)."""
        rng = seeding.stream(seed, _OUTLINES)
        src = rng.integers(0, len(rois), n)
        turns, flips = rng.integers(0, 4, n), rng.random(n) < 0.5
        factors = rng.uniform(self.config["scale_min"], self.config["scale_max"], n)
        masks = np.zeros((n, rois.size, rois.size), bool)
        for i in range(n):
            m = np.rot90(rois.mask[src[i]] > 0, int(turns[i]))
            masks[i] = _rescaled(m[:, ::-1] if flips[i] else m, float(factors[i]))
        return masks, src, factors

    def sample_patches(self, fitted: Fitted, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` tumours painted in real outlines: intensities (n, S, S) float32 and masks (n, S, S) bool."""
        return self._sample(fitted, n, seed)[:2]

    def _sample(self, fitted: Fitted, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from dataclasses import replace

        from augforge.models.ddpm import sample_ddpm

        masks, src, factors = self.outlines(fitted.rois, n, seed)
        model = fitted.model
        if fitted.state and fitted.state != model.config.sample_steps:  # a parameter, not part of the fit
            model = replace(model, config=replace(model.config, sample_steps=fitted.state))
        hu = fitted.scale.generator.to_hu(sample_ddpm(model, masks, seed=seed)).astype(np.float32)
        return hu, masks, src, factors

    def draw(self, source: Fitted, n: int, *, seed: int, rng: np.random.Generator) -> Any:
        return self._sample(source, n, seed)

    def tumour(self, source: Fitted, drawn: Any, i: int, rng: np.random.Generator) -> Tumour:
        if self.config["sizes"] != "train":
            return super().tumour(source, drawn[:2], i, rng)
        hu, masks, src, factors = drawn
        side_mm = source.rois.crop_mm[src[i]] * factors[i]  # the outline's own tumour, rescaled

        def shape(canvas: Slice, factor: float) -> tuple[int, int]:
            return tuple(int(v) for v in np.maximum(np.round(side_mm * factor / canvas.spacing_mm), 3))

        return Tumour(hu[i], masks[i], shape, {"generator": source.key, "outline": source.rois.slice_ids[src[i]]})


@hookimpl
def register_strategies(register):
    register(DDPMTumours)
